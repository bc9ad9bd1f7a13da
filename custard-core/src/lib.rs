//! Custard's SDK: everything needed to turn database access into safe, read-only
//! answers, with no opinion about how the host talks to users.
//!
//! - [`Schema`] and friends model a database's tables, columns and keys; the
//!   `postgres` and `sqlite` features add discovery through an `Executor`.
//! - [`Guard`] parses SQL and accepts only read-only queries, returning a
//!   [`CheckedSql`] that is the only thing an executor will run.
//! - [`AccessPolicy`] (allowed schemas and tables, masked columns) is the same
//!   policy as data, for executors that make the database enforce it too.
//! - [`wire`] holds the versioned messages between the agent and the server.
//! - [`Code`] is the one vocabulary of error codes, shared by every surface
//!   (HTTP, the wire, Python); each family (`RejectionCode`, `ExecErrorCode`,
//!   ...) is declared once with its names.
//!
//! The default feature set does no IO at all.
//!
//! ```
//! use custard_core::{Dialect, Guard};
//!
//! let guard = Guard::builder(Dialect::Postgres).max_rows(100).build()?;
//! let checked = guard.check("SELECT name FROM users ORDER BY name")?;
//! assert!(checked.sql().ends_with("LIMIT 101"));
//! assert!(guard.check("DELETE FROM users").is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod ask;
mod codes;
mod dialect;
mod exec;
pub mod format;
mod guard;
pub mod llm;
mod policy;
mod prompt;
mod retrieve;
mod schema;
mod text;
pub mod wire;

/// A boxed, sendable future, so that traits with async methods stay object safe.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

pub use ask::{
    Answer, AskError, AskErrorCode, AskOptions, AskPipeline, AskRequest, AskStep, Attempt,
    AttemptFailure, AttemptStage, ChartKind, ChartSpec, MAX_HISTORY_TURNS, MAX_QUESTION_BYTES,
    MAX_SQL_BYTES, Progress, Timings,
};
pub use codes::{Code, InputErrorCode};
pub use dialect::{Dialect, UnknownDialect};
#[cfg(feature = "postgres")]
pub use exec::postgres::PostgresExecutor;
#[cfg(feature = "sqlite")]
pub use exec::sqlite::SqliteExecutor;
pub use exec::{
    ColumnMeta, DatabaseUrl, DiscoverOptions, ExecError, ExecErrorCode, Executor, QueryResult,
    RowBatch, RowSender, RunLimits, RunSummary, connect,
};
pub use guard::{CheckedSql, Guard, GuardBuilder, GuardConfigError, Rejection, RejectionCode};
pub use policy::AccessPolicy;
pub use prompt::{ChatMessage, Example, Feedback, PromptBuilder, Role, Turn, select_examples};
pub use retrieve::{RetrieveOptions, Retrieved, SchemaIndex};
pub use schema::{Column, DdlOptions, ForeignKey, Schema, Table, TableKind};
pub use text::{estimate_tokens, stem, words};
