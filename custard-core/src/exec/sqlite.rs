//! SQLite executor: runs one [`CheckedSql`] on a read-only connection and streams rows.
//!
//! Behind the guard, three more things keep SQLite read-only: the file is opened
//! with `SQLITE_OPEN_READ_ONLY`, `PRAGMA query_only` is on, and only a single
//! statement that returns rows and that SQLite itself reports as read-only runs.
//! A deadline interrupts the query through an [`InterruptHandle`].
//!
//! With an [`AccessPolicy`] ([`SqliteExecutor::open_with_policy`]), SQLite
//! enforces it too: an authorizer on every connection refuses to prepare a
//! statement that reads a masked column or a table outside the policy (see
//! `sqlite_policy.rs`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, InterruptHandle, OpenFlags};
use serde_json::Value;
use tokio::runtime::Handle;

use super::{
    BoxFuture, Caps, ColumnMeta, DiscoverOptions, ExecError, ExecErrorCode, Executor, RowBatch,
    RowSender, RunLimits, RunSummary, sqlite_discover, sqlite_policy,
};
use crate::{AccessPolicy, CheckedSql, Dialect, Schema};

/// Idle connections kept for reuse; more are opened on demand and closed after use.
const MAX_IDLE_CONNECTIONS: usize = 4;

/// How often a timed-out query is interrupted again until it stops.
const REINTERRUPT_EVERY: Duration = Duration::from_millis(50);

/// How long a statement waits for a lock until a run sets its own `lock_timeout`.
const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs checked queries on a SQLite database file, read-only.
///
/// Connections are opened on demand and kept in a small pool, so one executor
/// serves concurrent queries. Each query runs on a blocking thread.
#[derive(Debug)]
pub struct SqliteExecutor {
    path: PathBuf,
    policy: Arc<AccessPolicy>,
    idle: Mutex<Vec<Connection>>,
}

impl SqliteExecutor {
    /// Opens the database file at `path` read-only; never creates it.
    ///
    /// Fails with [`ExecErrorCode::DatabaseUnavailable`] when the file is missing
    /// or is not a SQLite database.
    pub fn open(path: &Path) -> Result<Self, ExecError> {
        Self::open_with_policy(path, AccessPolicy::default())
    }

    /// [`SqliteExecutor::open`], with SQLite enforcing `policy` (layer 4).
    ///
    /// Every connection gets an authorizer that makes preparing a statement
    /// fail ([`ExecErrorCode::PermissionDenied`], naming the column or table)
    /// when it reads a masked column or a table outside the allowed schemas
    /// (`main`) and tables: by name, through `*`, a subquery, a CTE or a view
    /// (a view reads with the reader's rights, so the tables under an allowed
    /// view must be allowed too, and a view that reads a masked column cannot
    /// be read at all). `NATURAL` and `USING` joins are refused, because SQLite
    /// does not show the authorizer the columns they compare; so are
    /// `PRAGMA`s and `sqlite_stat4`, which keeps sample values.
    ///
    /// [`Executor::discover`] still reports every column of the allowed tables,
    /// masked ones included, so a [`Guard`](crate::Guard) built with the same
    /// policy knows them and refuses them by name; it leaves out tables the
    /// policy does not allow, and takes no sample values from masked columns.
    pub fn open_with_policy(path: &Path, policy: AccessPolicy) -> Result<Self, ExecError> {
        let policy = Arc::new(policy);
        let conn = open_connection(path, &policy)?;
        Ok(SqliteExecutor { path: path.to_owned(), policy, idle: Mutex::new(vec![conn]) })
    }

    /// The path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The policy SQLite enforces on this executor's connections.
    pub fn policy(&self) -> &AccessPolicy {
        &self.policy
    }

    /// An idle connection, or a new one opened on a blocking thread.
    async fn checkout(&self) -> Result<Connection, ExecError> {
        let pooled = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        if let Some(conn) = pooled {
            return Ok(conn);
        }
        let path = self.path.clone();
        let policy = Arc::clone(&self.policy);
        tokio::task::spawn_blocking(move || open_connection(&path, &policy))
            .await
            .map_err(join_error)?
    }

    /// Returns a connection to the pool when it is clean and the pool has room.
    fn checkin(&self, conn: Connection) {
        // A connection left inside a transaction must not serve the next query.
        if !conn.is_autocommit() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_CONNECTIONS {
            idle.push(conn);
        }
    }
}

/// Opens one read-only connection to `path`, checks that it is a SQLite
/// database, and installs the authorizer for `policy`.
fn open_connection(path: &Path, policy: &Arc<AccessPolicy>) -> Result<Connection, ExecError> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            return Err(unavailable(format!("SQLite database path {shown} is a directory")));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(unavailable(format!("SQLite database file {shown} does not exist")));
        }
        Err(e) => return Err(unavailable(format!("cannot access SQLite database {shown}: {e}"))),
    }
    // The bundled SQLite reads names starting with `file:` as URIs; keep paths plain.
    let plain = if path.as_os_str().as_encoded_bytes().starts_with(b"file:") {
        Path::new(".").join(path)
    } else {
        path.to_owned()
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(&plain, flags)
        .map_err(|e| unavailable(format!("cannot open SQLite database {shown}: {e}")))?;
    let setup = || -> rusqlite::Result<()> {
        conn.pragma_update(None, "query_only", true)?;
        conn.busy_timeout(DEFAULT_BUSY_TIMEOUT)?;
        // Opening is lazy: reading the catalog proves the file is a database.
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get::<_, i64>(0))?;
        Ok(())
    };
    setup().map_err(|e| unavailable(format!("cannot read SQLite database {shown}: {e}")))?;
    sqlite_policy::install(&mut conn, policy, sqlite_policy::Access::Run).map_err(|e| {
        ExecError::new(ExecErrorCode::Internal, format!("installing the SQLite authorizer: {e}"))
    })?;
    Ok(conn)
}

impl Executor for SqliteExecutor {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn discover<'a>(
        &'a self,
        options: &'a DiscoverOptions,
    ) -> BoxFuture<'a, Result<Schema, ExecError>> {
        Box::pin(async move {
            let mut conn = self.checkout().await?;
            let options = options.clone();
            let policy = Arc::clone(&self.policy);
            let (conn, result) = tokio::task::spawn_blocking(move || {
                use sqlite_policy::Access;
                let access = |conn: &mut Connection, access| {
                    sqlite_policy::install(conn, &policy, access).map_err(|e| {
                        ExecError::new(
                            ExecErrorCode::Internal,
                            format!("installing the SQLite authorizer: {e}"),
                        )
                    })
                };
                // Discovery reads the catalog, which a query may not.
                if let Err(e) = access(&mut conn, Access::Catalog) {
                    return (None, Err(e));
                }
                let result = sqlite_discover::discover(&conn, &options, &policy);
                // A connection that cannot be put back under the query rules is not reused.
                match access(&mut conn, Access::Run) {
                    Ok(()) => (Some(conn), result),
                    Err(e) => (None, result.and(Err(e))),
                }
            })
            .await
            .map_err(join_error)?;
            if let Some(conn) = conn {
                self.checkin(conn);
            }
            result
        })
    }

    fn run<'a>(
        &'a self,
        query: &'a CheckedSql,
        limits: &'a RunLimits,
        rows: RowSender,
    ) -> BoxFuture<'a, Result<RunSummary, ExecError>> {
        Box::pin(async move {
            super::ensure_dialect(query, Dialect::Sqlite)?;
            let started = Instant::now();
            let deadline = deadline_after(limits.timeout);
            let conn = self.checkout().await?;
            let mut interrupt =
                InterruptOnDrop { handle: conn.get_interrupt_handle(), armed: true };
            let job = RunJob {
                sql: query.sql().to_owned(),
                restricted: !self.policy.is_unrestricted(),
                caps: Caps::new(query, limits),
                batch_rows: limits.batch_rows.max(1),
                lock_timeout: limits.lock_timeout,
                timeout: limits.timeout,
                deadline,
                runtime: Handle::current(),
                rows,
            };
            let mut task = tokio::task::spawn_blocking(move || {
                let result = job.run(&conn);
                (conn, result)
            });
            let joined = tokio::select! {
                joined = &mut task => joined,
                // The statement fails with SQLITE_INTERRUPT, which becomes a timeout.
                () = tokio::time::sleep_until(deadline) => loop {
                    // Repeated: SQLite forgets an interrupt that lands just before the first step.
                    interrupt.handle.interrupt();
                    if let Ok(joined) = tokio::time::timeout(REINTERRUPT_EVERY, &mut task).await {
                        break joined;
                    }
                },
            };
            interrupt.disarm();
            let (conn, result) = joined.map_err(join_error)?;
            self.checkin(conn);
            let streamed = result?;
            Ok(RunSummary {
                row_count: streamed.caps.rows,
                truncated: streamed.truncated,
                bytes: streamed.caps.bytes,
                elapsed: started.elapsed(),
            })
        })
    }
}

/// Interrupts the connection's running statement when dropped while armed, so a
/// cancelled `run` future does not leave a query running on its blocking thread.
struct InterruptOnDrop {
    handle: InterruptHandle,
    armed: bool,
}

impl InterruptOnDrop {
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.handle.interrupt();
        }
    }
}

/// Everything the blocking half of [`Executor::run`] needs.
struct RunJob {
    sql: String,
    /// A policy restricts what may be read (the authorizer is installed).
    restricted: bool,
    caps: Caps,
    batch_rows: usize,
    lock_timeout: Duration,
    timeout: Duration,
    deadline: tokio::time::Instant,
    runtime: Handle,
    rows: RowSender,
}

/// What the blocking half reports back: the caps' counts and whether rows were left out.
struct Streamed {
    caps: Caps,
    truncated: bool,
}

/// The result's columns, held back until the first rows show the storage class
/// of columns without a declared type.
struct PendingColumns {
    names: Vec<String>,
    declared: Vec<Option<String>>,
    seen: Vec<Option<&'static str>>,
}

impl RunJob {
    fn run(mut self, conn: &Connection) -> Result<Streamed, ExecError> {
        sqlite_policy::clear_denial();
        let timeout = self.timeout;
        // The authorizer runs while a statement is prepared (again if the schema
        // changed before a step); its reason is the clearer message.
        let fail = |e| match sqlite_policy::take_denial() {
            Some(reason) => ExecError::new(ExecErrorCode::PermissionDenied, reason),
            None => query_error(e, timeout),
        };
        conn.busy_timeout(self.lock_timeout).map_err(fail)?;
        if self.restricted && sqlite_policy::joins_by_name(&self.sql) {
            return Err(ExecError::new(
                ExecErrorCode::PermissionDenied,
                "NATURAL and USING joins are not allowed under the agent's policy (SQLite cannot \
                 check the columns they compare): join with ON instead",
            ));
        }
        let mut stmt = conn.prepare(&self.sql).map_err(fail)?;
        // Behind the guard and the read-only file: run only statements that read rows.
        if stmt.column_count() == 0 || !stmt.readonly() {
            return Err(ExecError::new(
                ExecErrorCode::PermissionDenied,
                "only a read-only query that returns rows may run",
            ));
        }
        // Checked SQL has no parameters; under a policy none may slip by unbound.
        if self.restricted && stmt.parameter_count() > 0 {
            return Err(ExecError::new(
                ExecErrorCode::PermissionDenied,
                "a query with parameters is not allowed under the agent's policy",
            ));
        }
        let width = stmt.column_count();
        let mut pending = Some(PendingColumns {
            names: stmt.column_names().map(str::to_owned).collect(),
            declared: stmt
                .columns()
                .map(|c| c.decl_type().filter(|t| !t.is_empty()).map(str::to_ascii_lowercase))
                .collect(),
            seen: vec![None; width],
        });
        let mut result = stmt.raw_query();
        let mut batch = Vec::new();
        let mut truncated = false;
        while let Some(row) = result.next().map_err(fail)? {
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                let value = row.get_ref(i).map_err(fail)?;
                if let Some(p) = pending.as_mut() {
                    p.seen[i] = p.seen[i].or(storage_class(value));
                }
                values.push(json_value(value));
            }
            if !self.caps.admit(&values) {
                truncated = true;
                break;
            }
            batch.push(values);
            if batch.len() >= self.batch_rows {
                self.flush(&mut pending, &mut batch)?;
            }
        }
        self.flush(&mut pending, &mut batch)?;
        Ok(Streamed { caps: self.caps, truncated })
    }

    /// Sends the columns if not yet sent, then the buffered rows if any.
    fn flush(
        &self,
        pending: &mut Option<PendingColumns>,
        batch: &mut Vec<Vec<Value>>,
    ) -> Result<(), ExecError> {
        if let Some(p) = pending.take() {
            let columns = p
                .names
                .into_iter()
                .zip(p.declared)
                .zip(p.seen)
                .map(|((name, declared), seen)| ColumnMeta {
                    name,
                    type_name: declared.unwrap_or_else(|| seen.unwrap_or("null").to_owned()),
                })
                .collect();
            self.send(RowBatch::Columns(columns))?;
        }
        if !batch.is_empty() {
            self.send(RowBatch::Rows(std::mem::take(batch)))?;
        }
        Ok(())
    }

    fn send(&self, batch: RowBatch) -> Result<(), ExecError> {
        // Not `blocking_send`: a reader that stalls without hanging up must not
        // hold the thread and the connection past the deadline.
        let send = tokio::time::timeout_at(self.deadline, self.rows.send(batch));
        match self.runtime.block_on(send) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(ExecError::new(
                ExecErrorCode::ReceiverClosed,
                "the receiver of the rows went away before the query finished",
            )),
            Err(_) => Err(timeout_error(self.timeout)),
        }
    }
}

/// `now + timeout`, saturating far in the future for huge timeouts.
fn deadline_after(timeout: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(timeout).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

/// The JSON form of a SQLite value; blobs are base64, non-finite reals are strings.
fn json_value(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => match serde_json::Number::from_f64(f) {
            Some(n) => Value::Number(n),
            None if f.is_nan() => Value::from("NaN"),
            None if f > 0.0 => Value::from("Infinity"),
            None => Value::from("-Infinity"),
        },
        ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::String(BASE64.encode(b)),
    }
}

/// SQLite's storage class of a value, as `typeof()` names it; `None` for NULL.
fn storage_class(value: ValueRef<'_>) -> Option<&'static str> {
    match value {
        ValueRef::Null => None,
        ValueRef::Integer(_) => Some("integer"),
        ValueRef::Real(_) => Some("real"),
        ValueRef::Text(_) => Some("text"),
        ValueRef::Blob(_) => Some("blob"),
    }
}

/// Maps a SQLite error of a query to an [`ExecError`] carrying SQLite's message.
pub(super) fn query_error(e: rusqlite::Error, timeout: Duration) -> ExecError {
    match &e {
        rusqlite::Error::SqliteFailure(failure, message) => {
            let code = match failure.code {
                ErrorCode::OperationInterrupted => return timeout_error(timeout),
                ErrorCode::ReadOnly
                | ErrorCode::PermissionDenied
                | ErrorCode::AuthorizationForStatementDenied => ExecErrorCode::PermissionDenied,
                ErrorCode::CannotOpen
                | ErrorCode::NotADatabase
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::SystemIoFailure => ExecErrorCode::DatabaseUnavailable,
                _ => ExecErrorCode::QueryFailed,
            };
            ExecError::new(code, message.clone().unwrap_or_else(|| e.to_string()))
        }
        rusqlite::Error::MultipleStatement => {
            ExecError::new(ExecErrorCode::QueryFailed, "only one statement may run at a time")
        }
        rusqlite::Error::Empty => ExecError::new(ExecErrorCode::QueryFailed, "the query is empty"),
        _ => ExecError::new(ExecErrorCode::QueryFailed, e.to_string()),
    }
}

fn timeout_error(timeout: Duration) -> ExecError {
    ExecError::new(
        ExecErrorCode::Timeout,
        format!(
            "the query ran longer than its {} ms timeout and was interrupted",
            timeout.as_millis()
        ),
    )
}

fn unavailable(message: String) -> ExecError {
    ExecError::new(ExecErrorCode::DatabaseUnavailable, message)
}

fn join_error(e: tokio::task::JoinError) -> ExecError {
    ExecError::new(ExecErrorCode::Internal, format!("the SQLite worker thread failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A database file built from `setup`, and an executor over it.
    fn database(setup: &str) -> (tempfile::TempDir, PathBuf, SqliteExecutor) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.db");
        Connection::open(&path).unwrap().execute_batch(setup).unwrap();
        let exec = SqliteExecutor::open(&path).unwrap();
        (dir, path, exec)
    }

    const NUMBERS: &str = "CREATE TABLE n(i INTEGER PRIMARY KEY, label VARCHAR(20), x);
        WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 10)
        INSERT INTO n SELECT i, 'row ' || i, i * 1.5 FROM c;";

    /// What a run produced: the batches in order and the summary, without timings.
    #[derive(Debug, PartialEq)]
    struct Outcome {
        batches: Vec<RowBatch>,
        row_count: u64,
        truncated: bool,
    }

    async fn run(
        exec: &SqliteExecutor,
        sql: &str,
        row_limit: Option<u64>,
        limits: &RunLimits,
    ) -> Result<Outcome, ExecError> {
        let query = CheckedSql::for_test(sql, Dialect::Sqlite, row_limit);
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let collect = async {
            let mut batches = Vec::new();
            while let Some(b) = rx.recv().await {
                batches.push(b);
            }
            batches
        };
        let (summary, batches) = tokio::join!(exec.run(&query, limits, tx), collect);
        let summary = summary?;
        let sent: usize =
            batches.iter().map(|b| if let RowBatch::Rows(r) = b { r.len() } else { 0 }).sum();
        assert_eq!(summary.row_count, sent as u64, "row_count counts the rows sent");
        Ok(Outcome { batches, row_count: summary.row_count, truncated: summary.truncated })
    }

    fn columns(cols: &[(&str, &str)]) -> RowBatch {
        RowBatch::Columns(
            cols.iter()
                .map(|(n, t)| ColumnMeta { name: (*n).to_owned(), type_name: (*t).to_owned() })
                .collect(),
        )
    }

    fn rows(rows: Value) -> RowBatch {
        let Value::Array(rows) = rows else { panic!("rows must be an array") };
        RowBatch::Rows(
            rows.into_iter()
                .map(|r| match r {
                    Value::Array(v) => v,
                    other => panic!("a row must be an array, not {other}"),
                })
                .collect(),
        )
    }

    #[tokio::test]
    async fn streams_columns_then_rows() {
        let (_dir, _path, exec) = database(NUMBERS);
        let limits = RunLimits::default();
        #[rustfmt::skip]
        let cases: Vec<(&str, Vec<RowBatch>)> = vec![
            // Declared types are reported in lowercase; expressions get their storage class.
            ("SELECT i, label, x, i * 2 AS twice FROM n WHERE i = 2", vec![
                columns(&[("i", "integer"), ("label", "varchar(20)"), ("x", "real"), ("twice", "integer")]),
                rows(json!([[2, "row 2", 3.0, 4]])),
            ]),
            ("SELECT NULL AS a, 1 AS b, 2.5 AS c, 'x' AS d, x'00ff10' AS e", vec![
                columns(&[("a", "null"), ("b", "integer"), ("c", "real"), ("d", "text"), ("e", "blob")]),
                rows(json!([[null, 1, 2.5, "x", "AP8Q"]])),
            ]),
            ("SELECT 1e999 AS inf, -1e999 AS ninf, x'' AS empty, ''", vec![
                columns(&[("inf", "real"), ("ninf", "real"), ("empty", "blob"), ("''", "text")]),
                rows(json!([["Infinity", "-Infinity", "", ""]])),
            ]),
            ("SELECT 9223372036854775807 AS big, -9223372036854775808 AS small", vec![
                columns(&[("big", "integer"), ("small", "integer")]),
                rows(json!([[9_223_372_036_854_775_807_i64, i64::MIN]])),
            ]),
            // The first non-null value decides an undeclared column's type.
            ("SELECT v FROM (SELECT NULL AS v UNION ALL SELECT 'a') ORDER BY v", vec![
                columns(&[("v", "text")]),
                rows(json!([[null], ["a"]])),
            ]),
            // An empty result still sends its columns.
            ("SELECT i, i + 1 AS j FROM n WHERE i > 100", vec![
                columns(&[("i", "integer"), ("j", "null")]),
            ]),
            ("SELECT 'é ünïcode ✓' AS s", vec![
                columns(&[("s", "text")]),
                rows(json!([["é ünïcode ✓"]])),
            ]),
        ];
        for (sql, expected) in cases {
            let out = run(&exec, sql, None, &limits).await.unwrap();
            assert_eq!(out.batches, expected, "{sql}");
            assert!(!out.truncated, "{sql}");
        }
    }

    #[tokio::test]
    async fn caps_and_batches() {
        let (_dir, _path, exec) = database(NUMBERS);
        let limits = |max_rows, max_bytes, batch_rows| RunLimits {
            max_rows,
            max_bytes,
            batch_rows,
            ..RunLimits::default()
        };
        // Each row of `SELECT i FROM n` costs its JSON, `[i]`, against the byte cap:
        // 3 bytes for rows 1 to 9.
        #[rustfmt::skip]
        let cases: Vec<(Option<u64>, RunLimits, &[usize], bool)> = vec![
            // (query row limit, limits, rows per batch, truncated)
            (None,      limits(100, 1 << 20, 4),  &[4, 4, 2], false),
            (None,      limits(100, 1 << 20, 10), &[10], false),
            (None,      limits(100, 1 << 20, 0),  &[1; 10], false),
            (None,      limits(10, 1 << 20, 500), &[10], false),
            (None,      limits(3, 1 << 20, 2),    &[2, 1], true),
            (Some(5),   limits(100, 1 << 20, 500), &[5], true),
            (Some(5),   limits(4, 1 << 20, 500),  &[4], true),
            (Some(50),  limits(100, 1 << 20, 500), &[10], false),
            (None,      limits(100, 3 * 6, 500), &[6], true),
            (None,      limits(100, 3 * 6 + 2, 500), &[6], true),
            (None,      limits(100, 2, 500),      &[], true),
        ];
        for (row_limit, limits, sizes, truncated) in cases {
            let out = run(&exec, "SELECT i FROM n ORDER BY i", row_limit, &limits).await.unwrap();
            let (first, rest) = out.batches.split_first().unwrap();
            assert_eq!(first, &columns(&[("i", "integer")]));
            let got: Vec<usize> = rest
                .iter()
                .map(|b| match b {
                    RowBatch::Rows(r) => r.len(),
                    RowBatch::Columns(_) => panic!("columns sent twice"),
                })
                .collect();
            let all: Vec<Value> = rest
                .iter()
                .flat_map(|b| if let RowBatch::Rows(r) = b { r.clone() } else { vec![] })
                .map(|mut r| r.remove(0))
                .collect();
            let case = format!("{row_limit:?} {limits:?}");
            assert_eq!(got, sizes, "{case}");
            assert_eq!(out.truncated, truncated, "{case}");
            assert_eq!(all, (1..=all.len() as i64).map(Value::from).collect::<Vec<_>>(), "{case}");
        }
    }

    #[tokio::test]
    async fn failures() {
        let (_dir, _path, exec) = database(NUMBERS);
        let limits = RunLimits::default();
        use ExecErrorCode::*;
        #[rustfmt::skip]
        let cases: &[(&str, ExecErrorCode, &str)] = &[
            ("SELECT * FROM missing", QueryFailed, "no such table: missing"),
            ("SELEC 1", QueryFailed, "syntax error"),
            ("SELECT nope FROM n", QueryFailed, "no such column: nope"),
            ("SELECT 1; SELECT 2", QueryFailed, "only one statement"),
            ("SELECT 1; DELETE FROM n", QueryFailed, "only one statement"),
            ("", QueryFailed, "empty"),
            ("-- nothing", QueryFailed, "empty"),
            ("SELECT abs(-9223372036854775808)", QueryFailed, "integer overflow"),
        ];
        for (sql, code, message) in cases {
            let err = run(&exec, sql, None, &limits).await.unwrap_err();
            assert_eq!(err.code, *code, "{sql}: {err}");
            assert!(err.message.contains(message), "{sql}: {err}");
        }
    }

    #[tokio::test]
    async fn write_statements_fail_and_leave_the_file_unchanged() {
        let (dir, path, exec) = database(NUMBERS);
        let before = std::fs::read(&path).unwrap();
        let other = dir.path().join("other.db");
        let limits = RunLimits::default();
        let attach = format!("ATTACH DATABASE '{}' AS other", other.display());
        let vacuum_into = format!("VACUUM INTO '{}'", other.display());
        let writes = [
            "INSERT INTO n(i, label) VALUES (100, 'new')",
            "INSERT INTO n(i, label) VALUES (101, 'new') RETURNING i",
            "UPDATE n SET label = 'changed'",
            "UPDATE n SET label = 'changed' RETURNING label",
            "DELETE FROM n",
            "DELETE FROM n RETURNING *",
            "REPLACE INTO n(i, label) VALUES (1, 'x')",
            "CREATE TABLE t(a)",
            "CREATE TEMP TABLE t(a)",
            "DROP TABLE n",
            "ALTER TABLE n ADD COLUMN y",
            "CREATE INDEX n_label ON n(label)",
            "PRAGMA query_only = OFF",
            "PRAGMA user_version = 7",
            "BEGIN IMMEDIATE",
            "VACUUM",
            &vacuum_into,
            "ANALYZE",
            "REINDEX",
            &attach,
        ];
        for sql in writes {
            let err = run(&exec, sql, None, &limits).await.unwrap_err();
            assert_eq!(err.code, ExecErrorCode::PermissionDenied, "{sql}: {err}");
        }
        assert_eq!(std::fs::read(&path).unwrap(), before, "the database file changed");
        assert!(!other.exists(), "ATTACH or VACUUM INTO created a file");
        // The pool still answers afterwards, outside any transaction.
        let out = run(&exec, "SELECT count(*) AS c FROM n", None, &limits).await.unwrap();
        assert_eq!(out.batches[1], rows(json!([[10]])));
    }

    #[tokio::test]
    async fn connection_is_read_only_even_without_the_statement_check() {
        let (_dir, path, _exec) = database(NUMBERS);
        let conn = open_connection(&path, &Arc::default()).unwrap();
        for sql in ["INSERT INTO n(i) VALUES (100)", "CREATE TABLE t(a)", "PRAGMA user_version = 3"]
        {
            let err = conn.execute_batch(sql).unwrap_err();
            let err = query_error(err, Duration::from_secs(1));
            assert_eq!(err.code, ExecErrorCode::PermissionDenied, "{sql}: {err}");
        }
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, 0);
    }

    const ENDLESS: &str =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";

    #[tokio::test]
    async fn timeout_interrupts_the_query_and_the_connection_is_reused() {
        let (_dir, _path, exec) = database(NUMBERS);
        // Zero and tiny timeouts fire around prepare and the first step.
        for millis in [0, 1, 5, 200] {
            let limits =
                RunLimits { timeout: Duration::from_millis(millis), ..RunLimits::default() };
            let started = Instant::now();
            let err = run(&exec, ENDLESS, None, &limits).await.unwrap_err();
            assert_eq!(err.code, ExecErrorCode::Timeout, "{millis} ms: {err}");
            assert!(started.elapsed() < Duration::from_secs(10), "{millis} ms: not prompt");
            // The interrupted connection went back to the pool and works.
            assert_eq!(exec.idle.lock().unwrap().len(), 1);
            let limits = RunLimits::default();
            let out = run(&exec, "SELECT 1 AS one", None, &limits).await.unwrap();
            assert_eq!(out.batches[1], rows(json!([[1]])), "{millis} ms");
        }
    }

    #[tokio::test]
    async fn timeout_while_the_reader_stalls() {
        let (_dir, _path, exec) = database(NUMBERS);
        let limits = RunLimits {
            timeout: Duration::from_millis(200),
            batch_rows: 1,
            ..RunLimits::default()
        };
        let query = CheckedSql::for_test("SELECT i FROM n", Dialect::Sqlite, None);
        // Capacity 1 and nobody reading: the second send waits until the deadline.
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let err = exec.run(&query, &limits, tx).await.unwrap_err();
        assert_eq!(err.code, ExecErrorCode::Timeout, "{err}");
    }

    #[tokio::test]
    async fn receiver_closed() {
        let (_dir, _path, exec) = database(NUMBERS);
        let query = CheckedSql::for_test("SELECT i FROM n", Dialect::Sqlite, None);
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        drop(rx);
        let err = exec.run(&query, &RunLimits::default(), tx).await.unwrap_err();
        assert_eq!(err.code, ExecErrorCode::ReceiverClosed, "{err}");
    }

    #[tokio::test]
    async fn a_dropped_run_interrupts_its_query() {
        let (_dir, _path, exec) = database(NUMBERS);
        let query = CheckedSql::for_test(ENDLESS, Dialect::Sqlite, None);
        let limits = RunLimits { timeout: Duration::from_secs(3600), ..RunLimits::default() };
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let cancelled =
            tokio::time::timeout(Duration::from_millis(100), exec.run(&query, &limits, tx)).await;
        assert!(cancelled.is_err(), "the endless query finished");
        // The blocking thread owns the sender: the channel closes once it stops.
        let closed = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        assert_eq!(closed, Ok(None), "the query kept running after its run was dropped");
    }

    #[tokio::test]
    async fn concurrent_runs_use_several_connections() {
        let (_dir, _path, exec) = database(NUMBERS);
        let limits = RunLimits::default();
        let sql = "SELECT count(*) FROM n AS a, n AS b, n AS c";
        let outs = tokio::join!(
            run(&exec, sql, None, &limits),
            run(&exec, sql, None, &limits),
            run(&exec, sql, None, &limits),
            run(&exec, sql, None, &limits),
        );
        for out in [outs.0, outs.1, outs.2, outs.3] {
            assert_eq!(out.unwrap().batches[1], rows(json!([[1000]])));
        }
        // All four took a connection before any gave one back.
        assert_eq!(exec.idle.lock().unwrap().len(), 4);
    }

    #[test]
    fn open_failures() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.db");
        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, b"this is not a SQLite database, just some text.....").unwrap();
        let cases: &[(&Path, &str)] = &[
            (&missing, "does not exist"),
            (dir.path(), "is a directory"),
            (&garbage, "not a database"),
        ];
        for (path, message) in cases {
            let err = SqliteExecutor::open(path).unwrap_err();
            assert_eq!(err.code, ExecErrorCode::DatabaseUnavailable, "{err}");
            assert!(err.message.contains(message), "{err}");
        }
        assert!(!missing.exists(), "opening created the file");
    }

    #[test]
    fn executor_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SqliteExecutor>();
    }

    /// A salary to mask, a PIN that is its table's rowid, a table outside the
    /// policy, views over each, and `sqlite_stat4` samples of the salary index.
    const STAFF: &str = "
        CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, salary INTEGER);
        INSERT INTO people VALUES (1, 'Ada', 100), (2, 'Bob', 200);
        CREATE INDEX people_salary ON people (salary);
        CREATE TABLE pins (pin INTEGER PRIMARY KEY, owner TEXT);
        INSERT INTO pins VALUES (1234, 'Ada');
        CREATE TABLE payroll (id INTEGER PRIMARY KEY, amount INTEGER, person INTEGER REFERENCES people);
        INSERT INTO payroll VALUES (1, 5000, 1);
        CREATE TABLE notes (id INTEGER PRIMARY KEY, person INTEGER REFERENCES payroll, body TEXT);
        INSERT INTO notes VALUES (1, 1, 'hello');
        CREATE VIEW people_public AS SELECT id, name FROM people;
        CREATE VIEW people_all AS SELECT * FROM people;
        CREATE VIEW well_paid AS SELECT id FROM people WHERE salary > 150;
        CREATE VIEW payroll_ids AS SELECT id FROM payroll;
        ANALYZE;";

    fn staff_policy() -> AccessPolicy {
        AccessPolicy::new(
            Some(vec!["main".into()]),
            Some(
                [
                    "people",
                    "pins",
                    "notes",
                    "people_public",
                    "people_all",
                    "well_paid",
                    "payroll_ids",
                ]
                .iter()
                .map(|t| format!("main.{t}"))
                .collect(),
            ),
            vec!["main.people.salary".into(), "main.PINS.Pin".into()],
        )
        .unwrap()
    }

    fn staff(policy: AccessPolicy) -> (tempfile::TempDir, SqliteExecutor) {
        let (dir, path, _) = database(STAFF);
        let exec = SqliteExecutor::open_with_policy(&path, policy).unwrap();
        (dir, exec)
    }

    /// The rows of a run that must succeed.
    async fn rows_of(exec: &SqliteExecutor, sql: &str) -> Vec<Vec<Value>> {
        let out = run(exec, sql, None, &RunLimits::default())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        out.batches
            .into_iter()
            .flat_map(|b| if let RowBatch::Rows(r) = b { r } else { Vec::new() })
            .collect()
    }

    /// Asserts that `sql` is refused by SQLite under the policy, with a message holding `why`.
    async fn refused(exec: &SqliteExecutor, sql: &str, why: &str) {
        let err = run(exec, sql, None, &RunLimits::default())
            .await
            .expect_err(&format!("{sql} must be refused"));
        assert_eq!(err.code, ExecErrorCode::PermissionDenied, "{sql}: {err}");
        assert!(err.message.contains(why), "{sql}: {why:?} missing from {err}");
    }

    const MASKED: &str = "the column main.people.salary is masked by the agent's policy";

    #[tokio::test]
    async fn the_authorizer_refuses_masked_columns_however_they_are_read() {
        let (_dir, exec) = staff(staff_policy());
        let pin = "the column main.pins.pin is masked";
        let by_name = "NATURAL and USING joins are not allowed";
        #[rustfmt::skip]
        let cases: &[(&str, &str)] = &[
            ("SELECT salary FROM people", MASKED),
            ("SELECT \"SALARY\" FROM Main.People", MASKED),
            ("SELECT [salary] FROM people", MASKED),
            ("SELECT * FROM people", MASKED),
            ("SELECT people.* FROM people", MASKED),
            ("SELECT p.* FROM people AS p JOIN pins ON pins.owner = p.name", MASKED),
            ("SELECT id FROM people WHERE salary > 150", MASKED),
            ("SELECT id FROM people ORDER BY salary", MASKED),
            ("SELECT name FROM people GROUP BY salary", MASKED),
            ("SELECT max(salary) FROM people", MASKED),
            ("SELECT count(salary) FROM people", MASKED),
            ("SELECT sum(salary) OVER () FROM people", MASKED),
            ("SELECT json_object('s', salary) FROM people", MASKED),
            ("SELECT (SELECT salary FROM people LIMIT 1)", MASKED),
            ("SELECT id FROM people WHERE EXISTS (SELECT 1 FROM people AS q WHERE q.salary = 100)", MASKED),
            ("SELECT id FROM people WHERE id IN (SELECT id FROM people WHERE salary = 100)", MASKED),
            ("SELECT id FROM (SELECT * FROM people)", MASKED),
            ("SELECT count(*) FROM (SELECT salary FROM people)", MASKED),
            ("WITH c AS (SELECT salary FROM people) SELECT count(*) FROM c", MASKED),
            ("WITH c AS (SELECT * FROM people) SELECT id FROM c", MASKED),
            ("WITH RECURSIVE r(x) AS (SELECT salary FROM people UNION SELECT x + 1 FROM r WHERE x < 0) SELECT count(*) FROM r", MASKED),
            ("SELECT id FROM people UNION SELECT salary FROM people", MASKED),
            ("SELECT * FROM people_all", MASKED),
            ("SELECT id FROM people_all", MASKED),
            // The view itself never returns the salary, but filtering by it is an oracle.
            ("SELECT count(*) FROM well_paid", MASKED),
            // The rowid is the PIN: every name for it is the masked column.
            ("SELECT pin FROM pins", pin),
            ("SELECT rowid FROM pins", pin),
            ("SELECT _rowid_, owner FROM pins", pin),
            ("SELECT owner FROM pins WHERE oid = 1234", pin),
            ("SELECT * FROM pins", pin),
            // Joins by name compare columns the authorizer never sees.
            ("SELECT p.id FROM people AS p NATURAL JOIN people AS q", by_name),
            ("SELECT p.id FROM people AS p JOIN (SELECT 100 AS salary) USING (salary)", by_name),
            ("SELECT count(*) FROM people LEFT JOIN pins USING (name)", by_name),
            // sqlite_stat4 keeps sampled index keys: the salaries.
            ("SELECT sample FROM sqlite_stat4", "keeps copies of column values"),
        ];
        for (sql, why) in cases {
            refused(&exec, sql, why).await;
        }
        // The other columns still read.
        #[rustfmt::skip]
        let allowed: &[(&str, Value)] = &[
            ("SELECT id, name FROM people ORDER BY id", json!([[1, "Ada"], [2, "Bob"]])),
            ("SELECT count(*) FROM people", json!([[2]])),
            ("SELECT name FROM main.PEOPLE WHERE id = 2", json!([["Bob"]])),
            ("SELECT owner FROM pins", json!([["Ada"]])),
            ("SELECT count(*) FROM pins", json!([[1]])),
            ("SELECT name FROM people_public ORDER BY id", json!([["Ada"], ["Bob"]])),
            ("SELECT p.name FROM people AS p JOIN people AS q ON p.id = q.id WHERE q.id = 1", json!([["Ada"]])),
            ("WITH c AS (SELECT id FROM people) SELECT count(*) FROM c", json!([[2]])),
            ("SELECT count(*) FROM (SELECT id FROM people)", json!([[2]])),
            ("SELECT 1 AS one", json!([[1]])),
        ];
        for (sql, want) in allowed {
            assert_eq!(&Value::from(rows_of(&exec, sql).await), want, "{sql}");
        }
    }

    #[tokio::test]
    async fn the_authorizer_refuses_tables_outside_the_policy() {
        let (_dir, exec) = staff(staff_policy());
        let payroll = "does not allow reading the table main.payroll";
        #[rustfmt::skip]
        let cases: &[(&str, &str)] = &[
            ("SELECT * FROM payroll", payroll),
            ("SELECT amount FROM main.payroll", payroll),
            ("SELECT count(*) FROM payroll", payroll),
            // A table read without its columns is named as the query wrote it.
            ("SELECT 1 FROM PAYROLL", "does not allow reading the table main.PAYROLL"),
            ("SELECT count(*) FROM main.payroll", payroll),
            ("SELECT id FROM people WHERE id IN (SELECT person FROM payroll)", payroll),
            ("WITH c AS (SELECT amount FROM payroll) SELECT count(*) FROM c", payroll),
            ("WITH c AS (SELECT * FROM payroll) SELECT 1 FROM c", payroll),
            ("SELECT n.body FROM notes AS n JOIN payroll AS p ON p.id = n.person", payroll),
            // An allowed view reads with the reader's rights: its table must be allowed too.
            ("SELECT id FROM payroll_ids", payroll),
            ("SELECT count(*) FROM payroll NATURAL JOIN notes", "NATURAL and USING joins"),
            ("SELECT name FROM sqlite_schema", "main.sqlite_master"),
            ("SELECT * FROM sqlite_stat1", "main.sqlite_stat1"),
            ("SELECT * FROM temp.sqlite_temp_master", "sqlite_temp_master"),
            ("SELECT * FROM pragma_table_info('payroll')", "main.pragma_table_info"),
            ("SELECT * FROM dbstat", "main.dbstat"),
        ];
        for (sql, why) in cases {
            refused(&exec, sql, why).await;
        }
        assert_eq!(rows_of(&exec, "SELECT body FROM notes").await, vec![vec![json!("hello")]]);
    }

    #[tokio::test]
    async fn a_policy_of_masks_alone_leaves_other_tables_readable() {
        let policy = AccessPolicy::new(None, None, vec!["main.people.salary".into()]).unwrap();
        let (_dir, exec) = staff(policy);
        refused(&exec, "SELECT * FROM people", MASKED).await;
        refused(&exec, "SELECT * FROM sqlite_stat4", "keeps copies of column values").await;
        refused(&exec, "SELECT 1 FROM people JOIN pins USING (id)", "USING joins").await;
        refused(&exec, "SELECT name FROM pragma_table_info('people')", "PRAGMA table_info").await;
        refused(&exec, "PRAGMA table_info(people)", "PRAGMA table_info").await;
        assert_eq!(rows_of(&exec, "SELECT amount FROM payroll").await, vec![vec![json!(5000)]]);
        assert_eq!(rows_of(&exec, "SELECT pin FROM pins").await, vec![vec![json!(1234)]]);
        // Without a policy nothing is refused: the executor is as before.
        let (_dir, _path, open) = database(STAFF);
        assert_eq!(
            rows_of(&open, "SELECT count(*) FROM people NATURAL JOIN people_public").await,
            vec![vec![json!(2)]]
        );
        assert_eq!(
            rows_of(&open, "SELECT salary FROM people WHERE id = 1").await,
            vec![vec![json!(100)]]
        );
    }

    #[tokio::test]
    async fn discovery_keeps_masked_columns_and_the_policy_holds_after_it() {
        let (_dir, exec) = staff(staff_policy());
        // A query first, so discovery reuses the pooled connection with its authorizer.
        refused(&exec, "SELECT salary FROM people", MASKED).await;
        let schema = exec.discover(&DiscoverOptions { sample_values: 3 }).await.unwrap();
        let names: Vec<&str> = schema.tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["notes", "payroll_ids", "people", "people_all", "people_public", "pins", "well_paid"],
            "payroll is left out"
        );
        let people = schema.tables.iter().find(|t| t.name == "people").unwrap();
        let columns: Vec<(&str, &[String])> =
            people.columns.iter().map(|c| (c.name.as_str(), &c.sample_values[..])).collect();
        assert_eq!(
            columns,
            [
                ("id", &[][..]),
                ("name", &["Ada".to_owned(), "Bob".to_owned()][..]),
                ("salary", &[][..])
            ],
            "the masked column is known, without samples"
        );
        let notes = schema.tables.iter().find(|t| t.name == "notes").unwrap();
        assert!(notes.foreign_keys.is_empty(), "the key to payroll is left out: {notes:?}");
        // Back under the query rules: the catalog and the masked column are refused again.
        assert_eq!(exec.idle.lock().unwrap().len(), 1);
        refused(&exec, "SELECT salary FROM people", MASKED).await;
        refused(&exec, "SELECT name FROM sqlite_master", "main.sqlite_master").await;
        assert_eq!(rows_of(&exec, "SELECT count(*) FROM people").await, vec![vec![json!(2)]]);
    }
}
