//! `/mcp`: the organisation's connections for AI assistants, over the Model
//! Context Protocol (Streamable HTTP, stateless, so any replica answers any
//! request), with the official SDK (`rmcp`).
//!
//! Only a personal access token opens it (`Authorization: Bearer
//! custard_pat_...`): the [`McpCaller`] extractor puts the token's user in the
//! request, and every tool reads it from there, so each tool works in the
//! token's organisation with its user's role, through the same logic as the
//! REST API ([`crate::connections`], [`crate::questions`]). A browser's
//! `Origin` other than the server's own (`CUSTARD_PUBLIC_URL`) is refused,
//! as the specification asks against DNS rebinding.
//!
//! Tools: `list_connections`, `get_schema`, `ask` and `run_sql`; results
//! and errors are `custard_mcp`'s, the errors carrying the REST API's codes.
//! `ask` and `run_sql` are questions like any other: under the question
//! limits and recorded in the history (source `mcp`). Every call is counted
//! in `/metrics` by tool and outcome.

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use custard_mcp::rmcp::handler::server::common::{Extension, schema_for_output, schema_for_type};
use custard_mcp::rmcp::model::{
    CallToolResult, Implementation, JsonObject, ServerCapabilities, ServerConfig,
};
use custard_mcp::rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use custard_mcp::rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService,
};
use custard_mcp::rmcp::{ServerHandler, tool, tool_handler, tool_router};
use custard_mcp::{AskResult, SchemaResult, SqlResult, ToolError, parse_args, schema_result};
use schemars::JsonSchema;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::auth::{CurrentUser, bearer_token, tokens::PERSONAL_TOKEN_PREFIX};
use crate::connections::{self, Live};
use crate::error::{AppError, ErrorCode};
use crate::questions::{self, AskInput, Failure};
use crate::state::AppState;
use crate::store::QuerySource;

/// The path of the endpoint.
pub(crate) const PATH: &str = "/mcp";

/// The most bytes one MCP request may have (as for every request).
const MAX_BODY_BYTES: usize = 64 * 1024;

const INSTRUCTIONS: &str = "Read-only access to the databases of your Custard organisation. \
    Call list_connections, then get_schema for a connection (with a search naming the subject \
    when its schema is big), then run_sql with one read-only query in the dialect get_schema \
    reports, or ask with a question in plain language. Every query is checked by Custard's \
    guard and runs read-only through the database's agent.";

/// The `/mcp` route: the MCP service behind the personal-token check.
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_max_request_body_bytes(MAX_BODY_BYTES)
        .enforce_origin_validation()
        // A browser page cannot send the token by itself, so DNS rebinding
        // gains nothing here, and a proxy may forward any `Host`: only the
        // `Origin` (a browser's request) is checked.
        .disable_allowed_hosts()
        .with_allowed_origins(allowed_origins(&state.config().public_url));
    let tools = Tools { state: state.clone() };
    let service = StreamableHttpService::new(
        move || Ok(tools.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    Router::new()
        .route_service(PATH, service)
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), authenticate))
}

/// The browser origin `/mcp` answers besides none: the public URL's, as
/// `scheme://host:port` (the port explicit, as the SDK's check wants it).
fn allowed_origins(public_url: &str) -> Vec<String> {
    let Ok(uri) = public_url.trim().parse::<axum::http::Uri>() else { return Vec::new() };
    let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else { return Vec::new() };
    let scheme = scheme.to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
    vec![format!("{scheme}://{}:{port}", host.to_ascii_lowercase())]
}

/// The caller of `/mcp`: the user of a personal access token. Session
/// tokens and cookies are refused: an assistant holds a token made for it,
/// which its owner can revoke alone.
#[derive(Clone, Debug)]
pub(crate) struct McpCaller(pub(crate) CurrentUser);

impl FromRequestParts<AppState> for McpCaller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let token = bearer_token(&parts.headers).filter(|t| t.starts_with(PERSONAL_TOKEN_PREFIX));
        let Some(token) = token else {
            return Err(AppError::new(
                ErrorCode::Unauthorized,
                "the MCP endpoint takes a personal access token (`Authorization: Bearer \
                 custard_pat_...`; create one under Settings)",
            ));
        };
        CurrentUser::of_personal_token(state, token).await.map(McpCaller)
    }
}

/// Refuses a request without a valid personal access token (401 with
/// `WWW-Authenticate: Bearer`), and hands the token's user to the tools.
async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    match McpCaller::from_request_parts(&mut parts, &state).await {
        Ok(caller) => {
            parts.extensions.insert(caller);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(error) => {
            let unauthorized = error.code == ErrorCode::Unauthorized;
            let mut response = error.into_response();
            if unauthorized {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            response
        }
    }
}

/// The tools, over the server's state; the caller comes with each request.
#[derive(Clone)]
struct Tools {
    state: AppState,
}

impl std::fmt::Debug for Tools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tools")
    }
}

/// `list_connections` takes nothing.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// `get_schema`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SchemaArgs {
    /// The connection, from `list_connections`.
    connection_id: String,
    /// What the question is about ("revenue by customer"), to pick the
    /// tables when the whole schema is too big to list.
    #[serde(default)]
    search: Option<String>,
}

/// `ask`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct AskArgs {
    /// The connection, from `list_connections`.
    connection_id: String,
    /// The question, in plain language.
    question: String,
    /// A previous answer's `conversation_id`, to ask a follow-up.
    #[serde(default)]
    conversation_id: Option<String>,
}

/// `run_sql`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SqlArgs {
    /// The connection, from `list_connections`.
    connection_id: String,
    /// One read-only query (`SELECT`, `WITH ... SELECT`, `VALUES`) in the
    /// connection's dialect.
    sql: String,
}

/// What `list_connections` returns.
#[derive(Debug, Serialize, JsonSchema)]
struct ConnectionsResult {
    /// The organisation's connections.
    connections: Vec<ConnectionInfo>,
}

/// A connection.
#[derive(Debug, Serialize, JsonSchema)]
struct ConnectionInfo {
    /// Its id, for the other tools.
    id: String,
    /// Its name.
    name: String,
    /// `postgres` or `sqlite`.
    db_type: String,
    /// `online` (an agent is connected: queries can run), `offline` or
    /// `pending` (no agent ever connected).
    status: String,
    /// Tables and views its agent reported, once it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    table_count: Option<usize>,
}

/// Only the tables of a stored schema, counted without reading them.
#[derive(Deserialize)]
struct TableCount {
    #[serde(default)]
    tables: Vec<IgnoredAny>,
}

#[tool_router]
impl Tools {
    #[tool(
        description = "The organisation's database connections: id, name, database kind, \
            status (queries run only while `online`) and table count.",
        input_schema = schema_for_type::<NoArgs>(),
        output_schema = schema_for_output::<ConnectionsResult>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_connections(
        &self,
        Extension(parts): Extension<Parts>,
        arguments: JsonObject,
    ) -> CallToolResult {
        let result = async {
            let caller = caller(&parts)?;
            parse_args::<NoArgs>(arguments)?;
            let inner = self.state.inner();
            let list = connections::list(&self.state, caller).await.map_err(tool_error)?;
            let mut out = Vec::with_capacity(list.len());
            for connection in list {
                let table_count = match connection.schema_fingerprint {
                    Some(_) => inner
                        .store
                        .get_schema(&connection.org_id, &connection.id)
                        .await
                        .ok()
                        .and_then(|s| serde_json::from_str::<TableCount>(&s.json).ok())
                        .map(|c| c.tables.len()),
                    None => None,
                };
                let live = Live::of(&connection, inner.router.as_ref());
                out.push(ConnectionInfo {
                    id: connection.id.as_str().to_owned(),
                    name: connection.name,
                    db_type: connection.dialect.as_str().to_owned(),
                    status: live.status.to_owned(),
                    table_count,
                });
            }
            let text = connections_text(&out);
            Ok::<_, ToolError>((ConnectionsResult { connections: out }, text))
        }
        .await;
        self.finish("list_connections", result.map(|(r, text)| custard_mcp::success(&r, text)))
    }

    #[tool(
        description = "A connection's tables and columns (types, keys, comments, sample values), \
            whole when it fits, else the ones most relevant to `search`.",
        input_schema = schema_for_type::<SchemaArgs>(),
        output_schema = schema_for_output::<SchemaResult>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn get_schema(
        &self,
        Extension(parts): Extension<Parts>,
        arguments: JsonObject,
    ) -> CallToolResult {
        let result = async {
            let caller = caller(&parts)?;
            let args = parse_args::<SchemaArgs>(arguments)?;
            let connection = connections::get(&self.state, caller, &args.connection_id)
                .await
                .map_err(tool_error)?;
            let pipeline =
                self.state.inner().pipelines.get(&connection).await.map_err(tool_error)?;
            // Rendering a big schema is CPU work: off the async threads.
            let (result, text) = tokio::task::spawn_blocking(move || {
                schema_result(pipeline.index(), args.search.as_deref())
            })
            .await
            .map_err(|e| tool_error(AppError::internal(e)))??;
            Ok::<_, ToolError>(custard_mcp::success(&result, text))
        }
        .await;
        self.finish("get_schema", result)
    }

    #[tool(
        description = "Answers a question about a connection's database in plain language: \
            writes SQL for it, checks and runs it read-only, and returns the answer with the SQL \
            and rows. Pass `conversation_id` back to ask a follow-up.",
        input_schema = schema_for_type::<AskArgs>(),
        output_schema = schema_for_output::<AskResult>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn ask(
        &self,
        Extension(parts): Extension<Parts>,
        arguments: JsonObject,
    ) -> CallToolResult {
        let result = async {
            let caller = caller(&parts)?;
            let args = parse_args::<AskArgs>(arguments)?;
            let permit = questions::admit(&self.state, caller).map_err(tool_error)?;
            let input = AskInput {
                connection_id: args.connection_id,
                question: args.question,
                conversation_id: args.conversation_id,
            };
            let answered =
                questions::answer(&self.state, caller, permit, QuerySource::Mcp, input, None)
                    .await
                    .map_err(failure)?;
            let result = AskResult::new(
                answered.answer,
                Some(answered.conversation_id.as_str().to_owned()),
                Some(answered.id.as_str().to_owned()),
            );
            let text = result.text();
            Ok::<_, ToolError>(custard_mcp::success(&result, text))
        }
        .await;
        self.finish("ask", result)
    }

    #[tool(
        description = "Runs one read-only SQL query on a connection's database and returns its \
            columns and rows. Custard's guard checks it, then the database's agent checks it \
            again and runs it in a read-only transaction with row, byte and time caps; anything \
            that could write is refused.",
        input_schema = schema_for_type::<SqlArgs>(),
        output_schema = schema_for_output::<SqlResult>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn run_sql(
        &self,
        Extension(parts): Extension<Parts>,
        arguments: JsonObject,
    ) -> CallToolResult {
        let result = async {
            let caller = caller(&parts)?;
            let args = parse_args::<SqlArgs>(arguments)?;
            // Bad SQL text spends none of the caller's question budget.
            questions::check_sql(&args.sql).map_err(tool_error)?;
            let permit = questions::admit(&self.state, caller).map_err(tool_error)?;
            let answered = questions::run_sql(
                &self.state,
                caller,
                permit,
                QuerySource::Mcp,
                args.connection_id,
                &args.sql,
            )
            .await
            .map_err(failure)?;
            let result = SqlResult::new(answered.answer, Some(answered.id.as_str().to_owned()));
            let text = result.text();
            Ok::<_, ToolError>(custard_mcp::success(&result, text))
        }
        .await;
        self.finish("run_sql", result)
    }
}

impl Tools {
    /// Counts the call and turns an error into the tool's error result.
    fn finish(
        &self,
        tool: &'static str,
        result: Result<CallToolResult, ToolError>,
    ) -> CallToolResult {
        let metrics = &self.state.inner().metrics;
        match result {
            Ok(result) => {
                metrics.mcp_tool_call(tool, "ok");
                result
            }
            Err(error) => {
                // Outcomes are the API's codes: a bounded label set.
                let code = ErrorCode::parse(&error.code).unwrap_or(ErrorCode::Internal);
                metrics.mcp_tool_call(tool, code.as_str());
                error.into_result()
            }
        }
    }
}

#[tool_handler]
impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("custard", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}

/// The token's user, put in the request by [`authenticate`].
fn caller(parts: &Parts) -> Result<&CurrentUser, ToolError> {
    parts
        .extensions
        .get::<McpCaller>()
        .map(|c| &c.0)
        .ok_or_else(|| ToolError::new(ErrorCode::Unauthorized.as_str(), "no caller"))
}

/// The REST API's error as a tool error: the same code and message.
fn tool_error(error: AppError) -> ToolError {
    ToolError::new(error.code.as_str(), error.message)
}

/// A failed question's error (it is in the history already).
fn failure(failure: Failure) -> ToolError {
    tool_error(failure.error)
}

/// The connections as a short list.
fn connections_text(connections: &[ConnectionInfo]) -> String {
    if connections.is_empty() {
        return "No connections yet: an admin adds one on the Connections page.".to_owned();
    }
    let lines: Vec<String> = connections
        .iter()
        .map(|c| {
            let tables = c.table_count.map(|n| format!(", {n} tables")).unwrap_or_default();
            format!("- {} (id {}): {}, {}{}", c.name, c.id, c.db_type, c.status, tables)
        })
        .collect();
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowed_origin_is_the_public_urls() {
        assert_eq!(allowed_origins("https://data.example.com/"), ["https://data.example.com:443"]);
        assert_eq!(
            allowed_origins(" HTTP://Data.Example.com:8080 "),
            ["http://data.example.com:8080"]
        );
        assert_eq!(allowed_origins("http://127.0.0.1:8000"), ["http://127.0.0.1:8000"]);
        assert!(allowed_origins("not a url").is_empty());
    }
}
