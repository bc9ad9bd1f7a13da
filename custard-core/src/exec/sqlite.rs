//! SQLite executor: runs one [`CheckedSql`] on a read-only connection and streams rows.
//!
//! Behind the guard, three more things keep SQLite read-only: the file is opened
//! with `SQLITE_OPEN_READ_ONLY`, `PRAGMA query_only` is on, and only a single
//! statement that returns rows and that SQLite itself reports as read-only runs.
//! A deadline interrupts the query through an [`InterruptHandle`].

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, InterruptHandle, OpenFlags};
use serde_json::Value;
use tokio::runtime::Handle;

use super::{
    BoxFuture, Caps, ColumnMeta, DiscoverOptions, ExecError, ExecErrorCode, Executor, RowBatch,
    RowSender, RunLimits, RunSummary, sqlite_discover,
};
use crate::{CheckedSql, Dialect, Schema};

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
    idle: Mutex<Vec<Connection>>,
}

impl SqliteExecutor {
    /// Opens the database file at `path` read-only; never creates it.
    ///
    /// Fails with [`ExecErrorCode::DatabaseUnavailable`] when the file is missing
    /// or is not a SQLite database.
    pub fn open(path: &Path) -> Result<Self, ExecError> {
        let conn = open_connection(path)?;
        Ok(SqliteExecutor { path: path.to_owned(), idle: Mutex::new(vec![conn]) })
    }

    /// The path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An idle connection, or a new one opened on a blocking thread.
    async fn checkout(&self) -> Result<Connection, ExecError> {
        let pooled = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        if let Some(conn) = pooled {
            return Ok(conn);
        }
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || open_connection(&path)).await.map_err(join_error)?
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

/// Opens one read-only connection to `path` and checks that it is a SQLite database.
fn open_connection(path: &Path) -> Result<Connection, ExecError> {
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
    let conn = Connection::open_with_flags(&plain, flags)
        .map_err(|e| unavailable(format!("cannot open SQLite database {shown}: {e}")))?;
    let setup = || -> rusqlite::Result<()> {
        conn.pragma_update(None, "query_only", true)?;
        conn.busy_timeout(DEFAULT_BUSY_TIMEOUT)?;
        // Opening is lazy: reading the catalog proves the file is a database.
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get::<_, i64>(0))?;
        Ok(())
    };
    setup().map_err(|e| unavailable(format!("cannot read SQLite database {shown}: {e}")))?;
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
            let conn = self.checkout().await?;
            let options = options.clone();
            let (conn, result) = tokio::task::spawn_blocking(move || {
                let result = sqlite_discover::discover(&conn, &options);
                (conn, result)
            })
            .await
            .map_err(join_error)?;
            self.checkin(conn);
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
        let timeout = self.timeout;
        let fail = |e| query_error(e, timeout);
        conn.busy_timeout(self.lock_timeout).map_err(fail)?;
        let mut stmt = conn.prepare(&self.sql).map_err(fail)?;
        // Behind the guard and the read-only file: run only statements that read rows.
        if stmt.column_count() == 0 || !stmt.readonly() {
            return Err(ExecError::new(
                ExecErrorCode::PermissionDenied,
                "only a read-only query that returns rows may run",
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
        // Each row of `SELECT i FROM n` costs 12 + 2 = 14 bytes against the byte cap.
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
            (None,      limits(100, 14 * 6, 500), &[6], true),
            (None,      limits(100, 14 * 6 + 13, 500), &[6], true),
            (None,      limits(100, 13, 500),     &[], true),
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
        let conn = open_connection(&path).unwrap();
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
}
