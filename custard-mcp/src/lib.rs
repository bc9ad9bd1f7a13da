//! Custard over the [Model Context Protocol](https://modelcontextprotocol.io):
//! what an AI assistant sees of a database, built on the official SDK
//! (`rmcp`).
//!
//! The tools' results and errors are shared by both ways of serving them:
//!
//! - the server's remote endpoint (`/mcp`, Streamable HTTP, one organisation's
//!   connections through their agents), which takes a `connection_id` in each
//!   tool;
//! - [`LocalServer`], one database over stdio (`custard-agent mcp`), whose
//!   tools take none.
//!
//! Every result carries structured content (with its JSON schema in the tool
//! list) and a short text rendering of it. The results of `ask` and
//! `run_sql` have the shape of `POST /api/v1/query`'s answer (`columns` as
//! `[{name, type}]`, `rows` as arrays in column order, `truncated`). Errors
//! are tool errors ([`ToolError`]) carrying the REST API's error code, so an
//! assistant can read and correct them; a bad argument is `validation_error`.
//!
//! SQL reaches a database only through [`AskPipeline`]: the pipeline's guard
//! first, then its executor (an agent, which checks again).

mod local;
mod render;
mod schema;

use custard_core::{Answer, AskError, ColumnMeta};
use rmcp::model::{CallToolResult, ContentBlock, JsonObject};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use local::LocalServer;
pub use render::table_text;
pub use schema::{
    ColumnInfo, ForeignKeyInfo, MAX_SEARCH_CHARS, SCHEMA_TOKENS, SchemaResult, TableInfo,
    schema_result,
};

// Re-exported for hosts that build their own tool router on these results.
pub use custard_core::AskPipeline;
pub use rmcp;

/// The code of an argument that is missing, of the wrong type or unknown:
/// the REST API's `validation_error`.
pub const VALIDATION_ERROR: &str = "validation_error";

/// A tool's failure as the assistant sees it: the REST API's error code and a
/// message meant for a person (or a model) to act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ToolError {
    /// The REST API's error code (`not_found`, `query_rejected`, ...).
    pub code: String,
    /// What went wrong.
    pub message: String,
}

impl ToolError {
    /// An error with `code` and `message`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ToolError { code: code.into(), message: message.into() }
    }

    /// The code and message of a question or query that failed in the core,
    /// as `custard-agent mcp` reports them (the server maps them to its own
    /// API errors instead): a guard refusal is `query_rejected`, with the
    /// guard's own code in the message.
    pub fn from_ask(error: &AskError) -> Self {
        match error {
            AskError::Rejected(r) => ToolError::new(
                "query_rejected",
                format!("the guard refused the SQL ({}): {}", r.code, r.message),
            ),
            // These messages are the executor's and the model's own; their
            // `Display` starts with the code, which the error carries already.
            AskError::Execution(e) => ToolError::new(error.code().as_str(), e.message.clone()),
            AskError::Model(e) => ToolError::new(error.code().as_str(), e.message.clone()),
            other => ToolError::new(other.code().as_str(), other.to_string()),
        }
    }

    /// The tool result: `isError`, the error as structured content, and
    /// `code: message` as text.
    pub fn into_result(self) -> CallToolResult {
        let text = self.to_string();
        let mut result =
            CallToolResult::structured_error(serde_json::to_value(&self).unwrap_or(Value::Null));
        result.content = vec![ContentBlock::text(text)];
        result
    }
}

impl From<ToolError> for CallToolResult {
    fn from(error: ToolError) -> Self {
        error.into_result()
    }
}

/// A tool's arguments, read into `T`; unknown, missing or mistyped ones are
/// a [`VALIDATION_ERROR`] naming what was wrong.
pub fn parse_args<T: DeserializeOwned>(arguments: JsonObject) -> Result<T, ToolError> {
    serde_json::from_value(Value::Object(arguments))
        .map_err(|e| ToolError::new(VALIDATION_ERROR, format!("invalid arguments: {e}")))
}

/// A successful result: `value` as structured content, `text` as its rendering.
pub fn success<T: Serialize>(value: &T, text: String) -> CallToolResult {
    match serde_json::to_value(value) {
        Ok(json) => {
            let mut result = CallToolResult::structured(json);
            result.content = vec![ContentBlock::text(text)];
            result
        }
        Err(e) => ToolError::new("internal", format!("could not encode the result: {e}")).into(),
    }
}

/// A result column, as in `POST /api/v1/query`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ResultColumn {
    /// The column's name in the result.
    pub name: String,
    /// The database's name for its type (`int4`, `numeric`, `text`, ...).
    #[serde(rename = "type")]
    pub type_name: String,
}

impl From<ColumnMeta> for ResultColumn {
    fn from(c: ColumnMeta) -> Self {
        ResultColumn { name: c.name, type_name: c.type_name }
    }
}

/// Rows from `run_sql`: the shape of `POST /api/v1/query`'s result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SqlResult {
    /// The SQL that ran, as the guard printed it back.
    pub sql: String,
    /// The result's columns.
    pub columns: Vec<ResultColumn>,
    /// The rows, each a list of JSON values in column order.
    pub rows: Vec<Vec<Value>>,
    /// Rows returned.
    pub row_count: usize,
    /// Whether rows were left out by a row or byte cap.
    pub truncated: bool,
    /// Its entry in the history, when the host keeps one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_id: Option<String>,
}

impl SqlResult {
    /// The rows of `answer` (from [`AskPipeline::run_sql`]).
    pub fn new(answer: Answer, history_id: Option<String>) -> Self {
        SqlResult {
            sql: answer.sql,
            columns: answer.columns.into_iter().map(ResultColumn::from).collect(),
            row_count: answer.rows.len(),
            rows: answer.rows,
            truncated: answer.truncated,
            history_id,
        }
    }

    /// A short rendering: the first rows as a table, and how many there were.
    pub fn text(&self) -> String {
        table_text(&self.columns, &self.rows, self.truncated)
    }
}

/// An answered question: `POST /api/v1/query`'s answer without the chart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AskResult {
    /// The answer in a sentence or two.
    pub answer: String,
    /// The SQL that answered.
    pub sql: String,
    /// The result's columns.
    pub columns: Vec<ResultColumn>,
    /// The rows, each a list of JSON values in column order.
    pub rows: Vec<Vec<Value>>,
    /// Rows returned.
    pub row_count: usize,
    /// Whether rows were left out by a cap.
    pub truncated: bool,
    /// Which engine wrote the SQL: `offline` or a model's name.
    pub engine: String,
    /// Pass it back to ask a follow-up in the same conversation (the
    /// remote server keeps conversations; the local one does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// Its entry in the history, when the host keeps one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_id: Option<String>,
}

impl AskResult {
    /// The answer of `answer`, with the host's conversation and history ids.
    pub fn new(
        answer: Answer,
        conversation_id: Option<String>,
        history_id: Option<String>,
    ) -> Self {
        AskResult {
            answer: answer.text,
            sql: answer.sql,
            columns: answer.columns.into_iter().map(ResultColumn::from).collect(),
            row_count: answer.rows.len(),
            rows: answer.rows,
            truncated: answer.truncated,
            engine: answer.engine,
            conversation_id,
            history_id,
        }
    }

    /// A short rendering: the answer, the SQL and the first rows.
    pub fn text(&self) -> String {
        format!(
            "{}\n\nSQL:\n```sql\n{}\n```\n\n{}",
            self.answer,
            self.sql,
            table_text(&self.columns, &self.rows, self.truncated)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_arguments_are_validation_errors_naming_the_field() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code, reason = "only parsed")]
        struct Args {
            sql: String,
        }
        let err = parse_args::<Args>(JsonObject::new()).expect_err("missing");
        assert_eq!(err.code, VALIDATION_ERROR);
        assert!(err.message.contains("missing field `sql`"), "{}", err.message);
        let mut extra = JsonObject::new();
        extra.insert("sql".into(), "select 1".into());
        extra.insert("connection".into(), "x".into());
        let err = parse_args::<Args>(extra).expect_err("unknown");
        assert!(err.message.contains("unknown field `connection`"), "{}", err.message);
    }

    #[test]
    fn errors_from_the_core_name_their_code_once() {
        let denied = AskError::Execution(custard_core::ExecError::new(
            custard_core::ExecErrorCode::PermissionDenied,
            "permission denied for table customers",
        ));
        let err = ToolError::from_ask(&denied);
        assert_eq!(err.code, "permission_denied");
        assert_eq!(err.to_string(), "permission_denied: permission denied for table customers");
    }

    #[test]
    fn a_tool_error_is_an_error_result_with_its_code() {
        let result = ToolError::new("not_found", "no such connection").into_result();
        assert_eq!(result.is_error, Some(true));
        assert_eq!(
            result.structured_content,
            Some(serde_json::json!({"code": "not_found", "message": "no such connection"}))
        );
    }
}
