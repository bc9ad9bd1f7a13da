//! `custard-agent mcp`: one database as a Model Context Protocol server over
//! stdio, for an AI assistant on the same machine, with no Custard server
//! involved.
//!
//! It starts like the agent: the database is opened with the agent's
//! policy, layers 3 and 4 (the role check) refuse a privileged role unless
//! `--allow-privileged-role`, and the schema is read and filtered by the
//! policy. Each query is then checked twice, as a server's would be: by the
//! pipeline's guard (the shared schema's identifiers), then by the agent's
//! own guard (the policy and masked columns) before it reaches the executor
//! and its read-only envelope (layer 2).
//!
//! stdout carries the protocol and nothing else: logs go to stderr.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use custard_core::llm::{LanguageModel, OfflineEngine, OpenAiConfig, OpenAiModel};
use custard_core::{
    AskOptions, AskPipeline, BoxFuture, CheckedSql, DatabaseUrl, Dialect, DiscoverOptions,
    ExecError, ExecErrorCode, Executor, RowSender, RunLimits, RunSummary, Schema,
};

use crate::config::{AgentConfig, DEFAULT_MAX_BYTES, DEFAULT_MAX_ROWS, DEFAULT_QUERY_TIMEOUT_SECS};
use crate::state::AgentState;

/// Rows one answer or `run_sql` result carries (the agent's `--max-rows` may be lower).
const RESULT_ROWS: u64 = 1000;

/// Settings of `custard-agent mcp`: the agent's database and policy
/// settings, and the model `ask` uses.
#[derive(Debug, clap::Args)]
pub struct McpArgs {
    /// The database: postgres://..., postgresql://..., sqlite:PATH.
    #[arg(long, env = "CUSTARD_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// The most rows one query returns.
    #[arg(long, env = "CUSTARD_MAX_ROWS", default_value_t = DEFAULT_MAX_ROWS)]
    pub max_rows: u64,
    /// The most bytes of rows one query returns.
    #[arg(long, env = "CUSTARD_MAX_BYTES", default_value_t = DEFAULT_MAX_BYTES)]
    pub max_bytes: u64,
    /// The longest a query may run, in seconds.
    #[arg(long, env = "CUSTARD_QUERY_TIMEOUT_SECS", default_value_t = DEFAULT_QUERY_TIMEOUT_SECS)]
    pub query_timeout_secs: u64,
    /// Only tables in these schemas may be read or shown (comma-separated).
    #[arg(long, env = "CUSTARD_ALLOWED_SCHEMAS", value_delimiter = ',')]
    pub allowed_schemas: Option<Vec<String>>,
    /// Only these tables may be read or shown, as schema.table (comma-separated).
    #[arg(long, env = "CUSTARD_ALLOWED_TABLES", value_delimiter = ',')]
    pub allowed_tables: Option<Vec<String>>,
    /// Columns no query may read and the schema never shows, as schema.table.column.
    #[arg(long, env = "CUSTARD_MASKED_COLUMNS", value_delimiter = ',')]
    pub masked_columns: Option<Vec<String>>,
    /// Frequent values shown per text column in the schema (0 shows none).
    #[arg(long, env = "CUSTARD_SAMPLE_VALUES", default_value_t = 0)]
    pub sample_values: usize,
    /// Run even as a privileged role (then only warn); see `custard-agent run --help`.
    #[arg(long, env = "CUSTARD_ALLOW_PRIVILEGED_ROLE")]
    pub allow_privileged_role: bool,
    /// The model `ask` writes SQL with (OpenAI-compatible); without one the
    /// offline engine answers what it can.
    #[arg(long, env = "CUSTARD_LLM_MODEL")]
    pub llm_model: Option<String>,
    /// The model's API, up to and without `/chat/completions` (OpenAI's by default).
    #[arg(long, env = "CUSTARD_LLM_BASE_URL")]
    pub llm_base_url: Option<String>,
    /// The model API's key (or OPENAI_API_KEY).
    #[arg(long, env = "CUSTARD_LLM_API_KEY", hide_env_values = true)]
    pub llm_api_key: Option<String>,
}

impl McpArgs {
    /// The agent's configuration for these settings: no server, one query at a time.
    fn agent_config(&self) -> AgentConfig {
        let mut config = AgentConfig::new("", "", self.database_url.clone());
        config.max_concurrency = 1;
        config.max_rows = self.max_rows.max(1);
        config.max_bytes = self.max_bytes.max(1);
        config.query_timeout = Duration::from_secs(self.query_timeout_secs.max(1));
        config.allowed_schemas = self.allowed_schemas.clone();
        config.allowed_tables = self.allowed_tables.clone();
        config.masked_columns = self.masked_columns.clone().unwrap_or_default();
        config.sample_values = self.sample_values;
        config.allow_privileged_role = self.allow_privileged_role;
        config
    }

    /// The configured model, or the offline engine.
    fn model(&self) -> anyhow::Result<Arc<dyn LanguageModel>> {
        fn set(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|v| !v.is_empty())
        }
        let key = set(&self.llm_api_key)
            .map(str::to_owned)
            .or_else(|| std::env::var("OPENAI_API_KEY").ok().filter(|k| !k.trim().is_empty()));
        Ok(match (set(&self.llm_model), set(&self.llm_base_url)) {
            (None, None) => Arc::new(OfflineEngine::new()),
            (None, Some(_)) => anyhow::bail!(
                "CUSTARD_LLM_BASE_URL is set but CUSTARD_LLM_MODEL is not: name the model to use"
            ),
            (Some(model), base_url) => {
                let base_url = base_url.unwrap_or(OpenAiConfig::OPENAI_BASE_URL);
                let mut config = OpenAiConfig::new(base_url, model);
                if let Some(key) = key {
                    config = config.with_api_key(key);
                }
                Arc::new(OpenAiModel::new(config).context("configuring the language model")?)
            }
        })
    }
}

/// Checks the database and its role, reads the schema, and serves MCP on
/// stdio until the client closes it.
pub async fn serve(args: McpArgs) -> anyhow::Result<()> {
    let pipeline = pipeline(&args).await?;
    tracing::info!(
        tables = pipeline.schema().tables.len(),
        engine = %pipeline.engine(),
        "serving MCP on stdio"
    );
    custard_mcp::LocalServer::new(Arc::new(pipeline))
        .serve_stdio()
        .await
        .map_err(|e| anyhow::anyhow!("the MCP session failed: {e}"))
}

/// The pipeline the tools run on: the agent's database behind the agent's
/// guard, after the start-up checks.
pub async fn pipeline(args: &McpArgs) -> anyhow::Result<AskPipeline> {
    let model = args.model()?;
    let config = args.agent_config();
    let policy = config.access_policy().context("the agent's table policy")?;
    let executor = crate::agent::open(&config, &policy)?;
    if let DatabaseUrl::Postgres(url) = DatabaseUrl::parse(&config.database_url)? {
        let pending = crate::agent::check_role(&url, &config, &policy).await?;
        anyhow::ensure!(!pending, "the database is not reachable, so its role cannot be checked");
    }
    let state =
        Arc::new(AgentState::new(config, executor, None).context("the agent's table policy")?);
    let schema = state
        .refresh_schema(&DiscoverOptions { sample_values: state.config.sample_values })
        .await
        .map_err(|e| anyhow::anyhow!("reading the schema: {}", e.message))?;
    let options = AskOptions {
        max_rows: RESULT_ROWS.min(state.config.max_rows),
        limits: RunLimits {
            max_rows: state.config.max_rows,
            max_bytes: state.config.max_bytes,
            timeout: state.config.query_timeout,
            ..RunLimits::default()
        },
        ..AskOptions::default()
    };
    let executor: Arc<dyn Executor> = Arc::new(AgentGuarded { state });
    let pipeline =
        tokio::task::spawn_blocking(move || AskPipeline::new(schema, model, executor, options))
            .await
            .context("indexing the schema")?
            .context("building the guard")?;
    Ok(pipeline)
}

/// The agent's executor behind the agent's own guard and caps, as a
/// server's queries reach it: what the pipeline checked is checked again.
#[derive(Debug)]
struct AgentGuarded {
    state: Arc<AgentState>,
}

impl Executor for AgentGuarded {
    fn dialect(&self) -> Dialect {
        self.state.executor.dialect()
    }

    fn discover<'a>(
        &'a self,
        options: &'a DiscoverOptions,
    ) -> BoxFuture<'a, Result<Schema, ExecError>> {
        Box::pin(self.state.refresh_schema(options))
    }

    fn run<'a>(
        &'a self,
        query: &'a CheckedSql,
        limits: &'a RunLimits,
        rows: RowSender,
    ) -> BoxFuture<'a, Result<RunSummary, ExecError>> {
        Box::pin(async move {
            let config = &self.state.config;
            // The tighter of the pipeline's row limit (in the checked SQL),
            // the run's and the agent's, as the server's hub computes it.
            let max_rows = query.row_limit().map_or(limits.max_rows, |l| l.min(limits.max_rows));
            let limits = RunLimits {
                max_rows: max_rows.min(config.max_rows),
                max_bytes: limits.max_bytes.min(config.max_bytes),
                timeout: limits.timeout.min(config.query_timeout),
                ..limits.clone()
            };
            let checked = self
                .state
                .catalog()
                .guard
                .check_within(query.query(), limits.max_rows)
                .map_err(|r| {
                ExecError::new(
                    ExecErrorCode::Rejected,
                    format!("the agent's guard refused the SQL ({}): {}", r.code, r.message),
                )
            })?;
            self.state.executor.run(&checked, &limits, rows).await
        })
    }
}
