//! What the agent knows between sessions: its configuration, the database,
//! and the schema with the guard built from it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use custard_core::{
    AccessPolicy, DiscoverOptions, ExecError, Executor, Guard, GuardConfigError, Schema,
};

use crate::agent::Verdict;
use crate::config::AgentConfig;
use crate::health::{self, Link, Reason, Record};
use crate::logs::Throttle;

/// How often a summary of repeated refusals (queries the guard rejected,
/// frames the agent refused) is logged at info level.
const REFUSAL_SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// The schema the agent shares and the guard that checks queries against it.
#[derive(Debug)]
pub(crate) struct Catalog {
    /// The fingerprint of the policy-filtered schema, once it could be read.
    pub(crate) fingerprint: Option<String>,
    /// The agent's own guard: policy always, identifiers when the schema is known.
    pub(crate) guard: Guard,
}

/// Shared by the sessions and their tasks.
#[derive(Debug)]
pub(crate) struct AgentState {
    pub(crate) config: AgentConfig,
    /// The configuration's policy, parsed.
    policy: AccessPolicy,
    pub(crate) executor: Arc<dyn Executor>,
    /// TLS for a `wss://` server (none for `ws://`).
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    /// Queries refused by the agent's guard, for the summary in the log.
    pub(crate) rejections: Throttle,
    /// Frames refused (malformed, duplicate ids, ...), for the summary in the log.
    pub(crate) refused_frames: Throttle,
    catalog: RwLock<Arc<Catalog>>,
    /// The role check could not run at start (database down) and must run before any request.
    role_pending: AtomicBool,
    /// Set once the role check found a privileged role (or one that reads past
    /// the policy) that is not allowed.
    role_refused: AtomicBool,
    /// The state last written to the health file, and since when it holds.
    health: Mutex<Option<(Link, u64)>>,
}

impl AgentState {
    pub(crate) fn new(
        config: AgentConfig,
        executor: Arc<dyn Executor>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, GuardConfigError> {
        let guard = build_guard(&config, executor.dialect(), None)?;
        let policy = config.access_policy()?;
        let catalog = Catalog { fingerprint: None, guard };
        Ok(AgentState {
            config,
            policy,
            executor,
            tls,
            rejections: Throttle::new(REFUSAL_SUMMARY_EVERY),
            refused_frames: Throttle::new(REFUSAL_SUMMARY_EVERY),
            catalog: RwLock::new(Arc::new(catalog)),
            role_pending: AtomicBool::new(false),
            role_refused: AtomicBool::new(false),
            health: Mutex::new(None),
        })
    }

    pub(crate) fn set_role_pending(&self, pending: bool) {
        self.role_pending.store(pending, Ordering::SeqCst);
    }

    /// Layers 3 and 4 for a role that could not be checked at start: checks it
    /// before the first request that reaches the database, and refuses every
    /// request once it turns out privileged or able to read past the policy
    /// (unless allowed).
    pub(crate) async fn role_gate(&self) -> Result<(), custard_core::wire::ErrorReport> {
        let refusal = || {
            custard_core::wire::ErrorReport::new(
                custard_core::ExecErrorCode::PrivilegedRole,
                "the agent's database role is privileged or can read what the agent's policy \
                 keeps out; the agent refuses to run queries (see its log for the SQL that fixes \
                 the role, or set CUSTARD_ALLOW_PRIVILEGED_ROLE)",
            )
        };
        if self.role_refused.load(Ordering::SeqCst) {
            return Err(refusal());
        }
        if !self.role_pending.load(Ordering::SeqCst) {
            return Ok(());
        }
        let url = &self.config.database_url;
        match crate::agent::check_database_role(url, &self.policy).await {
            Ok(checks) => {
                match checks.verdict(&self.config, &self.policy, crate::agent::database_name(url)) {
                    Verdict::Refuse(message) => {
                        self.role_refused.store(true, Ordering::SeqCst);
                        self.role_pending.store(false, Ordering::SeqCst);
                        tracing::error!("{message}");
                        Err(refusal())
                    }
                    Verdict::Pass(warnings) => {
                        for warning in warnings {
                            tracing::warn!("{warning}");
                        }
                        self.role_pending.store(false, Ordering::SeqCst);
                        Ok(())
                    }
                }
            }
            // The database answered but the check failed: refuse, and try again next time.
            Err(e @ crate::startup::RoleCheckError::Query(_)) => {
                if self.config.allow_privileged_role {
                    tracing::warn!("{e} (--allow-privileged-role: running anyway)");
                    self.role_pending.store(false, Ordering::SeqCst);
                    return Ok(());
                }
                tracing::error!("{e}");
                Err(custard_core::wire::ErrorReport::new(
                    custard_core::ExecErrorCode::PrivilegedRole,
                    "the agent could not check its database role's privileges, so it refuses to \
                     run queries (see its log)",
                ))
            }
            // Still down: the request fails with `database_unavailable` on its own.
            Err(_) => Ok(()),
        }
    }

    pub(crate) fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the schema, keeps what the policy allows, and rebuilds the guard with it.
    pub(crate) async fn refresh_schema(
        &self,
        options: &DiscoverOptions,
    ) -> Result<Schema, ExecError> {
        let discovered = self.executor.discover(options).await?;
        let internal = |what: &str, e: &dyn std::fmt::Display| {
            ExecError::new(custard_core::ExecErrorCode::Internal, format!("{what}: {e}"))
        };
        // Filtering, fingerprinting and indexing a schema of thousands of
        // tables takes a while: not on the session's thread, which keeps
        // answering the server meanwhile.
        let config = self.config.clone();
        let (shared, catalog) = tokio::task::spawn_blocking(move || {
            let allowed = allowed_tables(&config, discovered);
            // The guard sees masked columns (to refuse them); the server never does.
            let shared = without_masked_columns(&config, allowed.clone());
            let guard = build_guard(&config, allowed.dialect, Some(allowed))
                .map_err(|e| internal("building the guard", &e))?;
            let catalog = Catalog { fingerprint: Some(shared.fingerprint()), guard };
            Ok::<_, ExecError>((shared, catalog))
        })
        .await
        .map_err(|e| internal("reading the schema", &e))??;
        *self.catalog.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(catalog);
        Ok(shared)
    }

    /// Records that the agent is connected (again), for `custard-agent health`.
    pub(crate) fn set_connected(&self) {
        self.write_health(Link::Connected, None);
    }

    /// Records that the agent is disconnected and why, for `custard-agent health`;
    /// the time it has been disconnected since is kept over retries.
    pub(crate) fn set_disconnected(&self, reason: Reason) {
        self.write_health(Link::Disconnected, Some(reason));
    }

    fn write_health(&self, link: Link, reason: Option<Reason>) {
        let Some(path) = &self.config.health_file else { return };
        let at = health::now();
        let since = {
            let mut current = self.health.lock().unwrap_or_else(|e| e.into_inner());
            match *current {
                Some((was, since)) if was == link => since,
                _ => {
                    *current = Some((link, at));
                    at
                }
            }
        };
        let _ = std::fs::write(path, Record { link, at, since, reason }.encode());
    }
}

fn build_guard(
    config: &AgentConfig,
    dialect: custard_core::Dialect,
    schema: Option<Schema>,
) -> Result<Guard, GuardConfigError> {
    let mut builder = Guard::builder(dialect).max_rows(config.max_rows);
    if let Some(schemas) = &config.allowed_schemas {
        builder = builder.allow_schemas(schemas.clone());
    }
    if let Some(tables) = &config.allowed_tables {
        builder = builder.allow_tables(tables.clone());
    }
    if let Some(schema) = schema {
        builder = builder.schema(schema);
    }
    builder.mask_columns(config.masked_columns.clone()).build()
}

/// The tables the agent's policy lets it read; the server cannot widen this.
fn allowed_tables(config: &AgentConfig, mut schema: Schema) -> Schema {
    schema.tables.retain(|t| {
        let schema_ok =
            config.allowed_schemas.as_ref().is_none_or(|s| s.iter().any(|s| s == &t.schema));
        let table_ok = config.allowed_tables.as_ref().is_none_or(|list| {
            list.iter().any(|q| q.split_once('.') == Some((t.schema.as_str(), t.name.as_str())))
        });
        schema_ok && table_ok
    });
    schema
}

/// The schema without masked columns, nor keys that name them.
fn without_masked_columns(config: &AgentConfig, mut schema: Schema) -> Schema {
    for table in &mut schema.tables {
        let is_masked = |column: &str| {
            config
                .masked_columns
                .iter()
                .any(|m| *m == format!("{}.{}.{}", table.schema, table.name, column))
        };
        let masked: Vec<String> =
            table.columns.iter().filter(|c| is_masked(&c.name)).map(|c| c.name.clone()).collect();
        if masked.is_empty() {
            continue;
        }
        table.columns.retain(|c| !masked.contains(&c.name));
        if table.primary_key.iter().any(|c| masked.contains(c)) {
            table.primary_key.clear();
        }
        table.foreign_keys.retain(|fk| !fk.columns.iter().any(|c| masked.contains(c)));
    }
    schema
}
