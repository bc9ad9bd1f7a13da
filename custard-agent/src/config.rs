//! `custard-agent run` configuration: flags, `CUSTARD_...` variables, and the
//! seed-era variables (`DB_HOST`, `DB_PORT`, `DB_NAME`, `DB_USER`,
//! `DB_PASSWORD`, `BACKEND_WEBSOCKET_URI`) so existing deployments move over
//! unchanged.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use custard_core::{AccessPolicy, GuardConfigError};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

/// Flags of `custard-agent run`; every one also reads a `CUSTARD_...` variable.
#[derive(Clone, clap::Args)]
pub struct RunArgs {
    /// The server's agent endpoint: ws://HOST/api/v1/connections/ws/ID (or wss://).
    #[arg(long, env = "CUSTARD_SERVER_URL")]
    pub server_url: Option<String>,
    /// A PEM file of CA certificates to trust for wss://, besides the system's.
    ///
    /// For a server behind a private CA. The system's certificates are read from the
    /// platform's store, or from SSL_CERT_FILE / SSL_CERT_DIR when those are set. A file
    /// that is missing or holds no usable certificate stops the agent at start.
    #[arg(long, env = "CUSTARD_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// The connection's API key, sent as `Authorization: Bearer`.
    #[arg(long, env = "CUSTARD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The database: postgres://..., postgresql://..., sqlite:PATH.
    #[arg(long, env = "CUSTARD_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Queries run at once; more are refused with `busy`.
    #[arg(long, env = "CUSTARD_MAX_CONCURRENCY", default_value_t = DEFAULT_MAX_CONCURRENCY)]
    pub max_concurrency: usize,
    /// The most rows one query returns (the server may ask for fewer).
    #[arg(long, env = "CUSTARD_MAX_ROWS", default_value_t = DEFAULT_MAX_ROWS)]
    pub max_rows: u64,
    /// The most bytes of rows one query returns.
    #[arg(long, env = "CUSTARD_MAX_BYTES", default_value_t = DEFAULT_MAX_BYTES)]
    pub max_bytes: u64,
    /// The longest a query may run, in seconds (the server may ask for less).
    #[arg(long, env = "CUSTARD_QUERY_TIMEOUT_SECS", default_value_t = DEFAULT_QUERY_TIMEOUT_SECS)]
    pub query_timeout_secs: u64,
    /// Only tables in these schemas may be read or shared (comma-separated).
    ///
    /// The guard enforces it, and so does the database: PostgreSQL (the role may
    /// use no other schema; checked at start) or SQLite (an authorizer).
    #[arg(long, env = "CUSTARD_ALLOWED_SCHEMAS", value_delimiter = ',')]
    pub allowed_schemas: Option<Vec<String>>,
    /// Only these tables may be read or shared, as schema.table (comma-separated).
    ///
    /// The guard enforces it, and so does the database: PostgreSQL (the role may
    /// read no other table or view; checked at start) or SQLite (an authorizer).
    #[arg(long, env = "CUSTARD_ALLOWED_TABLES", value_delimiter = ',')]
    pub allowed_tables: Option<Vec<String>>,
    /// Columns no query may read and the schema never shows, as schema.table.column (comma-separated).
    ///
    /// The guard enforces it, and so does the database: PostgreSQL (the role may
    /// not SELECT them; checked at start) or SQLite (an authorizer).
    #[arg(long, env = "CUSTARD_MASKED_COLUMNS", value_delimiter = ',')]
    pub masked_columns: Option<Vec<String>>,
    /// Frequent values shared per text column in the schema (0 shares none).
    #[arg(long, env = "CUSTARD_SAMPLE_VALUES", default_value_t = 0)]
    pub sample_values: usize,
    /// Run even as a privileged role, or one PostgreSQL lets read past the policy (then only warn).
    ///
    /// At start the agent refuses a PostgreSQL role that is a superuser, a member of a
    /// dangerous predefined role or has CREATEROLE, REPLICATION or BYPASSRLS; and, when
    /// a policy is set, a role that can read a masked column or a table, view or schema
    /// outside the allowed ones. It prints the SQL that fixes the role and exits with a
    /// non-zero status. With this flag it logs the same as a warning and runs.
    #[arg(long, env = "CUSTARD_ALLOW_PRIVILEGED_ROLE")]
    pub allow_privileged_role: bool,
    /// Seconds in-flight queries get to finish on SIGTERM before they are cancelled.
    #[arg(long, env = "CUSTARD_SHUTDOWN_GRACE_SECS", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace_secs: u64,
    /// Where the agent records its state for `custard-agent health`.
    #[arg(long, env = "CUSTARD_HEALTH_FILE", default_value = "/tmp/custard-agent.health")]
    pub health_file: PathBuf,
    /// Milliseconds between attempts once the server refused the API key (a
    /// rotated or deleted key stays refused until someone acts).
    #[arg(long, env = "CUSTARD_KEY_REFUSED_RETRY_MS", default_value_t = DEFAULT_KEY_REFUSED_RETRY_MS, hide = true)]
    pub key_refused_retry_ms: u64,
    /// Seconds after which a session counts as stable: the reconnect delays
    /// start over when it ends, and a server that moves it (close code 1012)
    /// is followed at once.
    #[arg(long, env = "CUSTARD_STABLE_SESSION_SECS", default_value_t = DEFAULT_STABLE_SESSION_SECS, hide = true)]
    pub stable_session_secs: u64,
}

impl fmt::Debug for RunArgs {
    // The key and the database URL are secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunArgs").field("server_url", &self.server_url).finish_non_exhaustive()
    }
}

/// A complete, validated agent configuration.
#[derive(Clone)]
pub struct AgentConfig {
    /// The server's agent WebSocket endpoint.
    pub server_url: String,
    /// CA certificates (PEM) trusted for `wss://` besides the system's.
    pub ca_file: Option<PathBuf>,
    /// The connection's API key.
    pub api_key: String,
    /// The database URL (holds credentials: never printed).
    pub database_url: String,
    /// Queries run at once.
    pub max_concurrency: usize,
    /// Row cap per query.
    pub max_rows: u64,
    /// Byte cap per query.
    pub max_bytes: u64,
    /// Deadline per query.
    pub query_timeout: Duration,
    /// Schemas that may be read.
    pub allowed_schemas: Option<Vec<String>>,
    /// Tables that may be read, as schema.table.
    pub allowed_tables: Option<Vec<String>>,
    /// Columns that are never read or shared, as schema.table.column.
    pub masked_columns: Vec<String>,
    /// Sample values shared per text column.
    pub sample_values: usize,
    /// Whether a privileged database role is accepted.
    pub allow_privileged_role: bool,
    /// Time in-flight queries get on shutdown.
    pub shutdown_grace: Duration,
    /// Where the health state is written.
    pub health_file: Option<PathBuf>,
    /// The delay between attempts once the server refused the API key.
    pub key_refused_retry: Duration,
    /// How long a session lasts to count as stable.
    pub stable_session: Duration,
}

impl fmt::Debug for AgentConfig {
    // The key and the database URL are secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentConfig")
            .field("server_url", &self.server_url)
            .field("ca_file", &self.ca_file)
            .field("max_concurrency", &self.max_concurrency)
            .field("max_rows", &self.max_rows)
            .field("query_timeout", &self.query_timeout)
            .field("allowed_schemas", &self.allowed_schemas)
            .field("allowed_tables", &self.allowed_tables)
            .field("masked_columns", &self.masked_columns)
            .finish_non_exhaustive()
    }
}

/// Queries one agent runs at once, unless configured.
pub const DEFAULT_MAX_CONCURRENCY: usize = 4;
/// Rows one query returns at most, unless configured.
pub const DEFAULT_MAX_ROWS: u64 = 10_000;
/// JSON bytes of rows one query returns at most, unless configured.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Seconds one query may run, unless configured.
pub const DEFAULT_QUERY_TIMEOUT_SECS: u64 = 30;
/// Seconds in-flight queries get on shutdown, unless configured.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;
/// Milliseconds between attempts with a refused API key, unless configured (5 minutes).
pub const DEFAULT_KEY_REFUSED_RETRY_MS: u64 = 5 * 60 * 1000;
/// A session that lasted a minute is stable (the wire protocol's rule).
pub const DEFAULT_STABLE_SESSION_SECS: u64 = 60;

impl AgentConfig {
    /// The policy of `allowed_schemas`, `allowed_tables` and `masked_columns`,
    /// parsed as the guard parses it.
    pub fn access_policy(&self) -> Result<AccessPolicy, GuardConfigError> {
        AccessPolicy::new(
            self.allowed_schemas.clone(),
            self.allowed_tables.clone(),
            self.masked_columns.clone(),
        )
    }

    /// A configuration for embedding the agent (the demo, tests, benchmarks):
    /// the three required settings and the defaults of `custard-agent run` for
    /// the rest (no policy, no samples, no health file), read from nothing else.
    pub fn new(
        server_url: impl Into<String>,
        api_key: impl Into<String>,
        database_url: impl Into<String>,
    ) -> Self {
        AgentConfig {
            server_url: server_url.into(),
            ca_file: None,
            api_key: api_key.into(),
            database_url: database_url.into(),
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            max_rows: DEFAULT_MAX_ROWS,
            max_bytes: DEFAULT_MAX_BYTES,
            query_timeout: Duration::from_secs(DEFAULT_QUERY_TIMEOUT_SECS),
            allowed_schemas: None,
            allowed_tables: None,
            masked_columns: Vec::new(),
            sample_values: 0,
            allow_privileged_role: false,
            shutdown_grace: Duration::from_secs(DEFAULT_SHUTDOWN_GRACE_SECS),
            health_file: None,
            key_refused_retry: Duration::from_millis(DEFAULT_KEY_REFUSED_RETRY_MS),
            stable_session: Duration::from_secs(DEFAULT_STABLE_SESSION_SECS),
        }
    }
}

/// What is missing or wrong in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required setting has no value.
    #[error("{0} is not set")]
    Missing(&'static str),
    /// A setting has a value the agent cannot use.
    #[error("{0}")]
    Invalid(String),
}

impl RunArgs {
    /// Resolves flags, `CUSTARD_...` and seed-era variables (looked up with `env`).
    pub fn resolve(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<AgentConfig, ConfigError> {
        let server_url = self
            .server_url
            .clone()
            .or_else(|| env("BACKEND_WEBSOCKET_URI"))
            .ok_or(ConfigError::Missing("CUSTARD_SERVER_URL (or BACKEND_WEBSOCKET_URI)"))?;
        if !(server_url.starts_with("ws://") || server_url.starts_with("wss://")) {
            return Err(ConfigError::Invalid(format!(
                "CUSTARD_SERVER_URL must start with ws:// or wss://, got `{server_url}`"
            )));
        }
        let api_key = self
            .api_key
            .clone()
            .filter(|k| !k.trim().is_empty())
            .ok_or(ConfigError::Missing("CUSTARD_API_KEY"))?;
        let database_url = match &self.database_url {
            Some(url) => url.clone(),
            None => legacy_database_url(&env).ok_or(ConfigError::Missing(
                "CUSTARD_DATABASE_URL (or DB_HOST, DB_NAME, DB_USER, DB_PASSWORD)",
            ))?,
        };
        if self.max_concurrency == 0 {
            return Err(ConfigError::Invalid("CUSTARD_MAX_CONCURRENCY must be at least 1".into()));
        }
        Ok(AgentConfig {
            server_url,
            ca_file: self.ca_file.clone(),
            api_key,
            database_url,
            max_concurrency: self.max_concurrency,
            max_rows: self.max_rows.max(1),
            max_bytes: self.max_bytes.max(1),
            query_timeout: Duration::from_secs(self.query_timeout_secs.max(1)),
            allowed_schemas: self.allowed_schemas.clone(),
            allowed_tables: self.allowed_tables.clone(),
            masked_columns: self.masked_columns.clone().unwrap_or_default(),
            sample_values: self.sample_values,
            allow_privileged_role: self.allow_privileged_role,
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            health_file: Some(self.health_file.clone()),
            key_refused_retry: Duration::from_millis(self.key_refused_retry_ms.max(1)),
            stable_session: Duration::from_secs(self.stable_session_secs.max(1)),
        })
    }
}

/// A PostgreSQL URL from the seed-era `DB_*` variables, credentials escaped.
fn legacy_database_url(env: &impl Fn(&str) -> Option<String>) -> Option<String> {
    let host = env("DB_HOST")?;
    let name = env("DB_NAME")?;
    let port = env("DB_PORT").unwrap_or_else(|| "5432".to_owned());
    let user = env("DB_USER").unwrap_or_else(|| "postgres".to_owned());
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    let credentials = match env("DB_PASSWORD").filter(|p| !p.is_empty()) {
        Some(password) => format!("{}:{}", enc(&user), enc(&password)),
        None => enc(&user),
    };
    Some(format!("postgres://{credentials}@{host}:{port}/{}", enc(&name)))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn resolve(args: &[&str], env: &[(&str, &str)]) -> Result<AgentConfig, ConfigError> {
        let env: HashMap<String, String> =
            env.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        let mut argv = vec!["agent"];
        argv.extend(args);
        Cli::try_parse_from(argv).expect("flags parse").run.resolve(|k| env.get(k).cloned())
    }

    #[test]
    fn new_and_seed_era_settings() {
        let c = resolve(
            &["--server-url", "ws://s/ws/1", "--api-key", "k", "--database-url", "sqlite:x.db"],
            &[],
        )
        .expect("ok");
        assert_eq!(
            (c.server_url.as_str(), c.database_url.as_str()),
            ("ws://s/ws/1", "sqlite:x.db")
        );
        let legacy = [
            ("BACKEND_WEBSOCKET_URI", "wss://old/ws"),
            ("DB_HOST", "db.internal"),
            ("DB_NAME", "shop"),
            ("DB_USER", "reader"),
            ("DB_PASSWORD", "p@ss:w/rd"),
        ];
        let c = resolve(&["--api-key", "k"], &legacy).expect("ok");
        assert_eq!(c.server_url, "wss://old/ws");
        assert_eq!(c.database_url, "postgres://reader:p%40ss%3Aw%2Frd@db.internal:5432/shop");
        assert!(!format!("{c:?}").contains("p%40ss"), "Debug hides the database URL");
        assert!(!format!("{c:?}").contains("api_key"), "Debug hides the key");
    }

    #[test]
    fn clear_errors() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--api-key", "k", "--database-url", "sqlite:x"],
                "CUSTARD_SERVER_URL (or BACKEND_WEBSOCKET_URI) is not set",
            ),
            (
                &["--server-url", "http://s", "--api-key", "k", "--database-url", "sqlite:x"],
                "must start with ws:// or wss://",
            ),
            (
                &["--server-url", "ws://s", "--database-url", "sqlite:x"],
                "CUSTARD_API_KEY is not set",
            ),
            (&["--server-url", "ws://s", "--api-key", "k"], "CUSTARD_DATABASE_URL (or DB_HOST"),
            (
                &[
                    "--server-url",
                    "ws://s",
                    "--api-key",
                    "k",
                    "--database-url",
                    "sqlite:x",
                    "--max-concurrency",
                    "0",
                ],
                "at least 1",
            ),
        ];
        for (args, want) in cases {
            let err = resolve(args, &[]).expect_err("invalid").to_string();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
}
