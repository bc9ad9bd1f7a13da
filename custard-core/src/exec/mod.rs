//! Executors: run one [`CheckedSql`] inside a read-only envelope and stream rows.
//!
//! Every executor takes a [`CheckedSql`], never a `&str`, so no SQL reaches a
//! database without passing the [`Guard`](crate::Guard). Rows travel as
//! [`RowBatch`]es over a bounded channel: a slow reader slows the query down
//! instead of growing memory.

#[cfg(feature = "postgres")]
pub(crate) mod pg_discover;
#[cfg(feature = "postgres")]
pub(crate) mod pg_value;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;
#[cfg(feature = "sqlite")]
mod sqlite_discover;
#[cfg(feature = "sqlite")]
mod sqlite_policy;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::codes::codes;
use crate::{BoxFuture, CheckedSql, Dialect, Schema};

/// The sending half of the channel an executor streams a result into.
pub type RowSender = mpsc::Sender<RowBatch>;

/// A piece of a streamed result: the columns once, first, then rows in chunks.
#[derive(Clone, Debug, PartialEq)]
pub enum RowBatch {
    /// The result's columns; always the first batch.
    Columns(Vec<ColumnMeta>),
    /// A chunk of rows, each a value per column.
    Rows(Vec<Vec<Value>>),
}

/// Name and database type of one result column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnMeta {
    /// The column's name in the result.
    pub name: String,
    /// The database's name for its type (`int4`, `numeric`, `text`, ...).
    pub type_name: String,
}

/// Bounds on one query run, on top of the row limit in its [`CheckedSql`].
#[derive(Clone, Debug)]
pub struct RunLimits {
    /// Stop after this many rows (the smaller of this and the query's own limit wins).
    pub max_rows: u64,
    /// Stop once the rows sent add up to about this many bytes of JSON.
    pub max_bytes: u64,
    /// Cancel the query when it runs longer than this.
    pub timeout: Duration,
    /// Give up waiting for a lock after this long.
    pub lock_timeout: Duration,
    /// Rows per [`RowBatch::Rows`] chunk.
    pub batch_rows: usize,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            max_rows: 10_000,
            max_bytes: 64 * 1024 * 1024,
            timeout: Duration::from_secs(30),
            lock_timeout: Duration::from_secs(2),
            batch_rows: 500,
        }
    }
}

/// How a streamed run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSummary {
    /// Rows sent.
    pub row_count: u64,
    /// Whether rows were left out because a row or byte cap was reached.
    pub truncated: bool,
    /// Approximate JSON bytes of the rows sent.
    pub bytes: u64,
    /// Wall time from the start of the run to its end.
    pub elapsed: Duration,
}

/// A whole result collected in memory; see [`Executor::query`].
#[derive(Clone, Debug, PartialEq)]
pub struct QueryResult {
    /// The result's columns.
    pub columns: Vec<ColumnMeta>,
    /// The rows, each a value per column.
    pub rows: Vec<Vec<Value>>,
    /// How the run ended.
    pub summary: RunSummary,
}

/// What [`Executor::discover`] reads besides the structure.
#[derive(Clone, Debug, Default)]
pub struct DiscoverOptions {
    /// Up to this many frequent values per text column (0 for none). PostgreSQL
    /// takes them from the planner statistics, so tables never analysed have none.
    pub sample_values: usize,
}

codes! {
    /// The closed set of reasons an executor fails.
    pub enum ExecErrorCode {
        /// The database URL is malformed or names an unsupported database.
        InvalidUrl => "invalid_database_url",
        /// The database could not be reached or the connection broke.
        DatabaseUnavailable => "database_unavailable",
        /// The database rejected the query (syntax, unknown name, type error, ...).
        QueryFailed => "query_failed",
        /// The query ran past its deadline and was cancelled.
        Timeout => "query_timeout",
        /// The role lacks a privilege the query needs.
        PermissionDenied => "permission_denied",
        /// The receiver of the rows went away before the query finished.
        ReceiverClosed => "receiver_closed",
        /// The query was cancelled before it finished (the request was
        /// withdrawn, or the agent is stopping).
        Canceled => "canceled",
        /// A remote executor (the agent) refused the query with its own guard or
        /// policy; the guard's code is in the message. Once called `rejected`.
        Rejected => "query_rejected" | "rejected",
        /// No agent is connected for this database.
        AgentOffline => "agent_offline",
        /// Every connected agent is already running as many queries as it
        /// allows. Agents before the shared vocabulary said `busy`.
        AgentBusy => "agent_busy" | "busy",
        /// The agent went away while the request was in flight.
        AgentDisconnected => "agent_disconnected",
        /// The agent refuses to run queries until its database role is fixed:
        /// it is privileged, or can read what the agent's policy keeps out
        /// (layers 3 and 4).
        PrivilegedRole => "privileged_role",
        /// A bug or an unexpected state; the message says what.
        Internal => "internal",
    }
}

/// An executor failure: a code for programs and a message for people.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ExecError {
    /// What went wrong, from a closed set.
    pub code: ExecErrorCode,
    /// A human-readable explanation; never contains credentials.
    pub message: String,
    /// The database's own error code (PostgreSQL SQLSTATE), when it gave one.
    pub sqlstate: Option<String>,
}

impl ExecError {
    /// An error with a code and message and no SQLSTATE.
    pub fn new(code: ExecErrorCode, message: impl Into<String>) -> Self {
        ExecError { code, message: message.into(), sqlstate: None }
    }
}

/// A database that runs checked queries and describes itself.
pub trait Executor: Send + Sync + fmt::Debug {
    /// The SQL dialect this executor speaks.
    fn dialect(&self) -> Dialect;

    /// Reads the schema: every table and view the connection may select from,
    /// outside the system schemas.
    fn discover<'a>(
        &'a self,
        options: &'a DiscoverOptions,
    ) -> BoxFuture<'a, Result<Schema, ExecError>>;

    /// Runs `query` read-only and streams its result into `rows`: one
    /// [`RowBatch::Columns`], then [`RowBatch::Rows`] chunks. Always rolls back.
    fn run<'a>(
        &'a self,
        query: &'a CheckedSql,
        limits: &'a RunLimits,
        rows: RowSender,
    ) -> BoxFuture<'a, Result<RunSummary, ExecError>>;

    /// Runs `query` like [`Executor::run`] and collects the result, never
    /// more of it than the row and byte caps allow, whatever the executor
    /// sends (an executor may stand for an untrusted peer): past a cap the
    /// run is stopped and the result is marked truncated.
    fn query<'a>(
        &'a self,
        query: &'a CheckedSql,
        limits: &'a RunLimits,
    ) -> BoxFuture<'a, Result<QueryResult, ExecError>> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            let max_rows = query.row_limit().map_or(limits.max_rows, |l| l.min(limits.max_rows));
            let max_rows = usize::try_from(max_rows).unwrap_or(usize::MAX);
            let (tx, mut rx) = mpsc::channel(4);
            // Owns the receiver, so stopping early drops it and the run ends.
            let collect = async move {
                let mut columns = Vec::new();
                let mut all: Vec<Vec<Value>> = Vec::new();
                let mut bytes = 0u64;
                while let Some(batch) = rx.recv().await {
                    match batch {
                        RowBatch::Columns(c) => columns = c,
                        RowBatch::Rows(r) => {
                            for row in r {
                                let size = row.iter().map(json_size).sum::<u64>() + 2;
                                if all.len() >= max_rows || bytes + size > limits.max_bytes {
                                    // Dropping the receiver stops the run.
                                    return (columns, all, Some(bytes));
                                }
                                bytes += size;
                                all.push(row);
                            }
                        }
                    }
                }
                (columns, all, None)
            };
            let (summary, (columns, rows, cut)) =
                tokio::join!(self.run(query, limits, tx), collect);
            let summary = match (summary, cut) {
                (Ok(summary), None) => summary,
                // The collector stopped the run at a cap: whatever the run says
                // after that (it ended, or found its receiver gone) the result
                // is what was kept.
                (Ok(_) | Err(_), Some(bytes)) => RunSummary {
                    row_count: rows.len() as u64,
                    truncated: true,
                    bytes,
                    elapsed: started.elapsed(),
                },
                (Err(e), None) => return Err(e),
            };
            Ok(QueryResult { columns, rows, summary })
        })
    }
}

/// A parsed database URL: `postgres://...`, `postgresql://...`, `sqlite:PATH`
/// or `sqlite://PATH`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatabaseUrl {
    /// A PostgreSQL connection string, kept whole for the driver.
    Postgres(String),
    /// The path of a SQLite database file.
    Sqlite(PathBuf),
}

impl DatabaseUrl {
    /// Parses a database URL, saying what is wrong without echoing secrets.
    pub fn parse(url: &str) -> Result<Self, ExecError> {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(url.to_owned()));
        }
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(ExecError::new(ExecErrorCode::InvalidUrl, "sqlite URL has no path"));
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        let scheme = url.split_once(':').map_or("", |(s, _)| s);
        Err(ExecError::new(
            ExecErrorCode::InvalidUrl,
            format!(
                "unsupported database URL scheme `{scheme}` (expected postgres://, postgresql:// or sqlite:)"
            ),
        ))
    }

    /// The dialect of the database the URL names.
    pub fn dialect(&self) -> Dialect {
        match self {
            DatabaseUrl::Postgres(_) => Dialect::Postgres,
            DatabaseUrl::Sqlite(_) => Dialect::Sqlite,
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    // Never print a password: show only what identifies the database.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Postgres(_) => f.write_str("DatabaseUrl::Postgres(..)"),
            DatabaseUrl::Sqlite(p) => write!(f, "DatabaseUrl::Sqlite({})", p.display()),
        }
    }
}

/// Opens an executor for a database URL.
pub async fn connect(url: &str) -> Result<Box<dyn Executor>, ExecError> {
    match DatabaseUrl::parse(url)? {
        #[cfg(feature = "postgres")]
        DatabaseUrl::Postgres(conn) => {
            Ok(Box::new(postgres::PostgresExecutor::connect(&conn).await?))
        }
        #[cfg(feature = "sqlite")]
        DatabaseUrl::Sqlite(path) => Ok(Box::new(sqlite::SqliteExecutor::open(&path)?)),
        #[allow(unreachable_patterns)]
        other => Err(ExecError::new(
            ExecErrorCode::InvalidUrl,
            format!(
                "support for {} is not compiled in (enable its cargo feature)",
                other.dialect()
            ),
        )),
    }
}

/// Refuses a query checked for another dialect than the executor speaks.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn ensure_dialect(query: &CheckedSql, dialect: Dialect) -> Result<(), ExecError> {
    if query.dialect() == dialect {
        Ok(())
    } else {
        Err(ExecError::new(
            ExecErrorCode::Internal,
            format!("a query checked for {} cannot run on {dialect}", query.dialect()),
        ))
    }
}

/// The size of a value serialized as JSON, for the byte caps.
pub(crate) fn json_size(value: &Value) -> u64 {
    match value {
        Value::Null => 4,
        Value::Bool(b) => 5 - u64::from(*b),
        Value::Number(n) => {
            // Counted as printed, without building the text: every numeric
            // cell of every row passes here.
            let mut width = Width(0);
            let _ = std::fmt::Write::write_fmt(&mut width, format_args!("{n}"));
            width.0
        }
        Value::String(s) => escaped_len(s) + 2,
        Value::Array(a) => {
            let commas = a.len().saturating_sub(1) as u64;
            2 + commas + a.iter().map(json_size).sum::<u64>()
        }
        Value::Object(o) => {
            let commas = o.len().saturating_sub(1) as u64;
            2 + commas + o.iter().map(|(k, v)| escaped_len(k) + 3 + json_size(v)).sum::<u64>()
        }
    }
}

/// A `fmt::Write` that only counts the bytes written to it.
struct Width(u64);

impl std::fmt::Write for Width {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0 += s.len() as u64;
        Ok(())
    }
}

/// The length of `s` inside a JSON string, escaped as serde_json escapes it:
/// a control character takes six bytes (`\u0001`), so a string of them is six
/// times longer on the wire than in the database.
fn escaped_len(s: &str) -> u64 {
    s.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// Tracks the row and byte caps while a result streams; shared by all executors.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[derive(Debug)]
pub(crate) struct Caps {
    max_rows: u64,
    max_bytes: u64,
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl Caps {
    pub(crate) fn new(query: &CheckedSql, limits: &RunLimits) -> Self {
        let max_rows = query.row_limit().map_or(limits.max_rows, |l| l.min(limits.max_rows));
        Caps { max_rows, max_bytes: limits.max_bytes, rows: 0, bytes: 0 }
    }

    /// Whether the cap reached is `query`'s own row limit: the guard's wrapper
    /// asks the database for one row past it, so the row refused was the last
    /// one coming.
    #[cfg(feature = "postgres")]
    pub(crate) fn is_row_limit_of(&self, query: &CheckedSql) -> bool {
        self.rows >= self.max_rows && query.row_limit() == Some(self.max_rows)
    }

    /// Accounts one row; `false` means the row must not be sent and the result is truncated.
    pub(crate) fn admit(&mut self, row: &[Value]) -> bool {
        if self.rows >= self.max_rows {
            return false;
        }
        let size: u64 = row.iter().map(json_size).sum::<u64>() + 2;
        if self.bytes + size > self.max_bytes {
            return false;
        }
        self.rows += 1;
        self.bytes += size;
        true
    }
}

#[cfg(all(test, feature = "postgres"))]
mod layer2_tests;

#[cfg(test)]
mod json_size_tests {
    use serde_json::{Value, json};

    use super::json_size;

    /// The byte caps count what the wire will carry: exactly serde_json's
    /// encoding for strings (control characters take six bytes each) and
    /// numbers.
    #[test]
    fn sizes_are_the_encoded_sizes() {
        let control: String = (0u8..32).map(char::from).collect();
        let values: Vec<Value> = vec![
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(-12345678901234i64),
            json!(1.5e300),
            json!(0.1),
            json!(""),
            json!("plain text"),
            json!("quote \" backslash \\ slash / é ü 日本"),
            json!(control),
            json!("\u{1}".repeat(19_000)),
            json!([1, "a\n", [null]]),
            json!([]),
            json!({}),
            json!({"k\"": [1, {"x": "y"}], "b": null}),
        ];
        for v in values {
            let encoded = serde_json::to_string(&v).expect("encodes").len() as u64;
            assert_eq!(json_size(&v), encoded, "{v}");
        }
    }
}

#[cfg(test)]
mod query_tests {
    use serde_json::json;

    use super::*;
    use crate::Guard;

    /// Answers every run with rows until its receiver goes away, ignoring every
    /// cap and saying it sent nothing: a peer that must not be believed.
    #[derive(Debug)]
    struct Flood;

    impl Executor for Flood {
        fn dialect(&self) -> Dialect {
            Dialect::Postgres
        }

        fn discover<'a>(
            &'a self,
            _options: &'a DiscoverOptions,
        ) -> BoxFuture<'a, Result<Schema, ExecError>> {
            Box::pin(async { Ok(Schema::new(Dialect::Postgres)) })
        }

        fn run<'a>(
            &'a self,
            _query: &'a CheckedSql,
            _limits: &'a RunLimits,
            rows: RowSender,
        ) -> BoxFuture<'a, Result<RunSummary, ExecError>> {
            Box::pin(async move {
                let _ = rows.send(RowBatch::Columns(Vec::new())).await;
                for _ in 0..1_000_000 {
                    let batch = vec![vec![json!("x".repeat(100))]; 100];
                    if rows.send(RowBatch::Rows(batch)).await.is_err() {
                        return Err(ExecError::new(ExecErrorCode::ReceiverClosed, "gone"));
                    }
                }
                Ok(RunSummary { row_count: 0, truncated: false, bytes: 0, elapsed: Duration::ZERO })
            })
        }
    }

    #[tokio::test]
    async fn collecting_stops_at_the_caps_whatever_the_executor_sends() {
        let guard = Guard::builder(Dialect::Postgres).max_rows(250).build().expect("guard");
        let checked = guard.check("SELECT 1").expect("checked");
        // (executor rows, bytes) -> rows kept
        for (max_rows, max_bytes, kept) in
            [(10_000, u64::MAX, 250), (100, u64::MAX, 100), (10_000, 1040, 10)]
        {
            let limits = RunLimits { max_rows, max_bytes, ..RunLimits::default() };
            let result = Flood.query(&checked, &limits).await.expect("a truncated result");
            assert_eq!(result.rows.len(), kept, "{max_rows} rows, {max_bytes} bytes");
            assert!(result.summary.truncated);
            assert_eq!(result.summary.row_count, kept as u64);
        }
    }
}
