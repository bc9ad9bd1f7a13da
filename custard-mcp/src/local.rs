//! One database over stdio (`custard-agent mcp`): `get_schema`, `run_sql`
//! and `ask` on an [`AskPipeline`], with no server involved.

use std::sync::Arc;

use custard_core::{AskPipeline, AskRequest};
use rmcp::handler::server::common::{schema_for_output, schema_for_type};
use rmcp::model::{CallToolResult, Implementation, JsonObject, ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::{
    AskResult, SchemaResult, SqlResult, ToolError, VALIDATION_ERROR, parse_args, schema_result,
    success,
};

/// `get_schema`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SchemaArgs {
    /// What the question is about ("revenue by customer"), to pick the
    /// tables when the whole schema is too big to list.
    #[serde(default)]
    search: Option<String>,
}

/// `run_sql`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SqlArgs {
    /// One read-only query (`SELECT`, `WITH ... SELECT`, `VALUES`).
    sql: String,
}

/// `ask`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct AskArgs {
    /// The question, in plain language.
    question: String,
}

/// An MCP server over one database: every query goes through `pipeline`'s
/// guard and executor.
#[derive(Clone, Debug)]
pub struct LocalServer {
    pipeline: Arc<AskPipeline>,
}

const INSTRUCTIONS: &str = "Read-only access to one database. Call get_schema first (with a \
    search naming the subject when the schema is big), then run_sql with one read-only query in \
    the dialect get_schema reports, or ask with a question in plain language.";

#[tool_router]
impl LocalServer {
    /// A server whose tools run on `pipeline`.
    pub fn new(pipeline: Arc<AskPipeline>) -> Self {
        LocalServer { pipeline }
    }

    /// Serves the protocol on stdin and stdout until the client closes them.
    /// Nothing else may write to stdout meanwhile.
    pub async fn serve_stdio(self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let running = self.serve(rmcp::transport::stdio()).await?;
        running.waiting().await?;
        Ok(())
    }

    #[tool(
        description = "The database's tables and columns (types, keys, comments, sample values), \
            whole when it fits, else the ones most relevant to `search`.",
        input_schema = schema_for_type::<SchemaArgs>(),
        output_schema = schema_for_output::<SchemaResult>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn get_schema(&self, arguments: JsonObject) -> CallToolResult {
        let found = parse_args::<SchemaArgs>(arguments)
            .and_then(|args| schema_result(self.pipeline.index(), args.search.as_deref()));
        match found {
            Ok((result, text)) => success(&result, text),
            Err(e) => e.into_result(),
        }
    }

    #[tool(
        description = "Runs one read-only SQL query and returns its columns and rows. The query \
            is checked by Custard's guard and runs in a read-only transaction with row, byte and \
            time caps; anything that could write is refused.",
        input_schema = schema_for_type::<SqlArgs>(),
        output_schema = schema_for_output::<SqlResult>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn run_sql(&self, arguments: JsonObject) -> CallToolResult {
        let args = match parse_args::<SqlArgs>(arguments) {
            Ok(args) => args,
            Err(e) => return e.into_result(),
        };
        if let Err(e) = AskRequest::check_sql(&args.sql) {
            return ToolError::new(VALIDATION_ERROR, e.to_string()).into_result();
        }
        match self.pipeline.run_sql(&args.sql).await {
            Ok(answer) => {
                let result = SqlResult::new(answer, None);
                let text = result.text();
                success(&result, text)
            }
            Err(e) => ToolError::from_ask(&e).into_result(),
        }
    }

    #[tool(
        description = "Answers a question in plain language: writes SQL for it (with the \
            configured model, or the offline engine), checks and runs it, and returns the answer \
            with the SQL and rows.",
        input_schema = schema_for_type::<AskArgs>(),
        output_schema = schema_for_output::<AskResult>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn ask(&self, arguments: JsonObject) -> CallToolResult {
        let args = match parse_args::<AskArgs>(arguments) {
            Ok(args) => args,
            Err(e) => return e.into_result(),
        };
        match self.pipeline.ask(&args.question, &[]).await {
            Ok(answer) => {
                let result = AskResult::new(answer, None, None);
                let text = result.text();
                success(&result, text)
            }
            Err(e) => ToolError::from_ask(&e).into_result(),
        }
    }
}

#[tool_handler]
impl ServerHandler for LocalServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("custard-agent", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}
