//! The PostgreSQL executor: layer 2 of the read-only design.
//!
//! Each run takes a pooled connection and, inside `START TRANSACTION READ ONLY`
//! with `statement_timeout`, `lock_timeout` and
//! `idle_in_transaction_session_timeout` set locally, prepares the checked SQL
//! with the extended protocol (one statement per Parse), then streams its rows
//! under the row and byte caps; a cap that stops the read early cancels the
//! rest. The transaction always rolls back. The whole envelope takes two round
//! trips, as many as a plain prepared query (see [`run_envelope`]). A
//! client-side deadline sends a cancel request and throws the connection away.

use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::{FutureExt, StreamExt};
use tokio_postgres::error::SqlState;
use tokio_postgres::{CancelToken, NoTls};

use super::{
    BoxFuture, Caps, ColumnMeta, DiscoverOptions, ExecError, ExecErrorCode, Executor, RowBatch,
    RowSender, RunLimits, RunSummary, pg_discover, pg_value,
};
use crate::{CheckedSql, Dialect, Schema};

/// How long discovery's catalog queries may run.
const DISCOVER_TIMEOUT: Duration = Duration::from_secs(60);
/// Extra time past `statement_timeout` before the client gives up on the server.
const CLIENT_GRACE: Duration = Duration::from_millis(500);

/// Runs checked queries on PostgreSQL through a small connection pool.
#[derive(Clone)]
pub struct PostgresExecutor {
    pool: Pool,
}

impl std::fmt::Debug for PostgresExecutor {
    // The pool's config holds the password; show only its size.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresExecutor").field("pool_size", &self.pool.status().max_size).finish()
    }
}

impl PostgresExecutor {
    /// Connects to `url` with a pool of four connections and checks that the
    /// database answers.
    pub async fn connect(url: &str) -> Result<Self, ExecError> {
        let executor = Self::new(url, 4)?;
        drop(executor.pool.get().await.map_err(pool_error)?);
        Ok(executor)
    }

    /// Prepares a pool of up to `pool_size` connections to `url`; nothing
    /// connects until the first query, so a database that is down now may be
    /// up by then.
    pub fn new(url: &str, pool_size: usize) -> Result<Self, ExecError> {
        let config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
            ExecError::new(ExecErrorCode::InvalidUrl, format!("invalid PostgreSQL URL: {e}"))
        })?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(10)))
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            .map_err(|e| {
                ExecError::new(ExecErrorCode::Internal, format!("building the pool: {e}"))
            })?;
        Ok(PostgresExecutor { pool })
    }

    async fn run_inner(
        &self,
        query: &CheckedSql,
        limits: &RunLimits,
        rows: RowSender,
    ) -> Result<RunSummary, ExecError> {
        let started = Instant::now();
        let client = self.pool.get().await.map_err(pool_error)?;
        let cancel = client.cancel_token();
        let deadline = limits.timeout + CLIENT_GRACE;
        // Dropping the receiver is how a caller cancels: watch for it while the query runs.
        let watcher = rows.clone();
        let outcome = {
            let pg: &tokio_postgres::Client = &client;
            tokio::select! {
                ran = tokio::time::timeout(deadline, run_envelope(pg, &cancel, query, limits, rows)) => {
                    ran.map_err(|_| timeout_error(limits.timeout))
                }
                () = watcher.closed() => Err(receiver_closed()),
            }
        };
        match outcome {
            Ok(ran) => {
                if !ran.reusable {
                    drop(deadpool_postgres::Object::take(client));
                }
                let (row_count, bytes, truncated) = ran.result?;
                Ok(RunSummary { row_count, truncated, bytes, elapsed: started.elapsed() })
            }
            Err(e) => {
                // Missed deadline or cancelled by the caller: stop the server's work,
                // and never reuse this connection.
                stop(&client, &cancel).await;
                drop(deadpool_postgres::Object::take(client));
                Err(e)
            }
        }
    }
}

/// How long [`stop`] keeps cancelling, and how long it waits after each cancel.
const STOP_PATIENCE: Duration = Duration::from_secs(2);
const STOP_RETRY: Duration = Duration::from_millis(100);

/// Cancels whatever the connection runs and makes sure it stopped.
/// PostgreSQL ignores a cancel that arrives while it waits between two
/// messages (the statement parsed, its Execute not read yet), and the
/// envelope's messages are all sent up front; so cancel again until an empty
/// query sent behind them answers, which it does once they have all ended.
async fn stop(client: &tokio_postgres::Client, cancel: &CancelToken) {
    let behind = client.batch_execute("");
    let mut behind = std::pin::pin!(behind);
    let deadline = Instant::now() + STOP_PATIENCE;
    loop {
        let _ = cancel.cancel_query(NoTls).await;
        if tokio::time::timeout(STOP_RETRY, behind.as_mut()).await.is_ok()
            || Instant::now() >= deadline
        {
            return;
        }
    }
}

/// What one run of the envelope gives: (rows, bytes, truncated), and whether
/// the connection is clean to hand to the next query.
struct Ran {
    result: Result<(u64, u64, bool), ExecError>,
    reusable: bool,
}

/// Ends the transaction and releases advisory locks, the one session state a
/// rollback keeps, so no connection goes back to the pool holding one.
const END_TRANSACTION: &str = "ROLLBACK; SELECT pg_advisory_unlock_all()";

/// Runs the read-only envelope on one connection in two round trips:
///
/// 1. `START TRANSACTION READ ONLY` with the local settings (one simple
///    query), and the statement's Parse and Describe behind it;
/// 2. Bind and Execute, rows streamed as they come, and behind them
///    [`END_TRANSACTION`].
///
/// Each step's messages are written in order because `biased` polls the
/// futures in order and each writes its messages on its first poll;
/// PostgreSQL runs a connection's messages in the order they arrive, so the
/// settings hold before the statement is parsed, and the rollback runs once
/// the query is done. (`layer2_tests` checks that a query sees its
/// transaction read-only and its own `statement_timeout`.) The driver reads
/// rows with backpressure: a slow receiver pauses the socket, not memory.
async fn run_envelope(
    pg: &tokio_postgres::Client,
    cancel: &CancelToken,
    query: &CheckedSql,
    limits: &RunLimits,
    rows: RowSender,
) -> Ran {
    let begin = format!(
        "START TRANSACTION READ ONLY; {}",
        local_settings(limits.timeout, limits.lock_timeout, query.search_path())
    );
    // prepare() is a Parse message: PostgreSQL refuses more than one statement in it.
    let opened = tokio::try_join!(
        biased;
        async { pg.batch_execute(&begin).await.map_err(db_error) },
        async { pg.prepare(query.sql()).await.map_err(db_error) },
    );
    let opened = match opened {
        Ok(((), statement)) => send_columns(&statement, &rows).await.map(|()| statement),
        Err(e) => Err(e),
    };
    let (read, ended) = match opened {
        Ok(statement) => {
            // The query's Bind and Execute must be written before the rollback:
            // `read_rows` writes them at its first await, before anything else.
            let reading = async {
                let read = read_rows(pg, &statement, query, limits, &rows).await;
                if read.unfinished {
                    // The database may still be sending rows nobody will read: stop it
                    // rather than wait for them (the rollback behind it then runs).
                    let _ = cancel.cancel_query(NoTls).await;
                }
                read
            };
            tokio::join!(biased; reading, pg.batch_execute(END_TRANSACTION))
        }
        Err(e) => {
            let read = Read { result: Err(e), unfinished: false };
            (read, pg.batch_execute(END_TRANSACTION).await)
        }
    };
    // A cancel may land late, on whatever the connection runs next: never reuse it.
    let reusable = ended.is_ok() && !read.unfinished;
    Ran { result: read.result, reusable }
}

/// Sends the statement's columns, before any row.
async fn send_columns(
    statement: &tokio_postgres::Statement,
    rows: &RowSender,
) -> Result<(), ExecError> {
    let columns = statement
        .columns()
        .iter()
        .map(|c| ColumnMeta {
            name: c.name().to_owned(),
            type_name: pg_value::type_name(c.type_()),
        })
        .collect();
    rows.send(RowBatch::Columns(columns)).await.map_err(|_| receiver_closed())
}

/// How reading a query's rows ended.
struct Read {
    /// (rows, bytes, truncated), or why it failed.
    result: Result<(u64, u64, bool), ExecError>,
    /// Whether the database may still be sending rows of the query.
    unfinished: bool,
}

/// Binds and executes the prepared statement and streams its rows under the
/// caps, in batches of what has arrived (at most `batch_rows` rows or
/// [`BATCH_BYTES`] each), so small results go out at once and large ones in
/// bounded pieces.
async fn read_rows(
    pg: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
    query: &CheckedSql,
    limits: &RunLimits,
    rows: &RowSender,
) -> Read {
    let mut caps = Caps::new(query, limits);
    let done = |caps: &Caps, truncated| Ok((caps.rows, caps.bytes, truncated));
    let stream = match pg.query_raw(statement, NO_PARAMS).await {
        Ok(stream) => stream,
        Err(e) => return Read { result: Err(db_error(e)), unfinished: false },
    };
    let mut stream = std::pin::pin!(stream);
    let max_batch = limits.batch_rows.max(1);
    let mut batch: Vec<Vec<serde_json::Value>> = Vec::new();
    let mut batch_bytes = 0u64;
    loop {
        // Take what has arrived without waiting; send the batch before waiting for more.
        let next = match stream.as_mut().next().now_or_never() {
            Some(next) => next,
            None => {
                if let Err(e) = flush(rows, &mut batch, &mut batch_bytes).await {
                    return Read { result: Err(e), unfinished: true };
                }
                stream.as_mut().next().await
            }
        };
        let row = match next {
            None => break,
            Some(Ok(row)) => row,
            // The database stopped the query itself.
            Some(Err(e)) => return Read { result: Err(db_error(e)), unfinished: false },
        };
        let values = match pg_value::row_values(&row) {
            Ok(values) => values,
            Err(e) => return Read { result: Err(e), unfinished: true },
        };
        let before = caps.bytes;
        if !caps.admit(&values) {
            // The row-limit wrapper asks for one row past the cap, so when the
            // cap is the query's own limit that row was the last one coming.
            let unfinished = !caps.is_row_limit_of(query);
            let result = match flush(rows, &mut batch, &mut batch_bytes).await {
                Ok(()) => done(&caps, true),
                Err(e) => Err(e),
            };
            return Read { result, unfinished };
        }
        batch_bytes += caps.bytes - before;
        batch.push(values);
        if (batch.len() >= max_batch || batch_bytes >= BATCH_BYTES)
            && let Err(e) = flush(rows, &mut batch, &mut batch_bytes).await
        {
            return Read { result: Err(e), unfinished: true };
        }
    }
    let result = match flush(rows, &mut batch, &mut batch_bytes).await {
        Ok(()) => done(&caps, false),
        Err(e) => Err(e),
    };
    Read { result, unfinished: false }
}

/// The statements here take no parameters.
const NO_PARAMS: [&(dyn tokio_postgres::types::ToSql + Sync); 0] = [];

/// Sends the rows gathered so far, if any.
async fn flush(
    rows: &RowSender,
    batch: &mut Vec<Vec<serde_json::Value>>,
    batch_bytes: &mut u64,
) -> Result<(), ExecError> {
    if batch.is_empty() {
        return Ok(());
    }
    *batch_bytes = 0;
    rows.send(RowBatch::Rows(std::mem::take(batch))).await.map_err(|_| receiver_closed())
}

/// Memory one sort or hash of a query may use before spilling to disk: a
/// role or database default cannot give a question more. (Disk is bounded by
/// `temp_file_limit`, which only a superuser may set: the role SQL the agent
/// prints sets it for the agent's role.)
const WORK_MEM: &str = "32MB";

/// About how many bytes of rows one batch carries to the receiver.
const BATCH_BYTES: u64 = 1024 * 1024;

/// The transaction's local settings: time limits, `work_mem`, and the search
/// path the guard resolved names in (with `pg_temp` last, so no temporary table can
/// shadow a checked one; `pg_catalog` always comes first).
fn local_settings(statement: Duration, lock: Duration, search_path: &[String]) -> String {
    // Integers we format ourselves and identifiers quoted as identifiers:
    // nothing from the query reaches this string.
    let statement_ms = statement.as_millis().max(1);
    let lock_ms = lock.as_millis().max(1);
    let mut sql = format!(
        "SET LOCAL statement_timeout = {statement_ms}; \
         SET LOCAL lock_timeout = {lock_ms}; \
         SET LOCAL idle_in_transaction_session_timeout = {statement_ms}; \
         SET LOCAL work_mem = '{WORK_MEM}'"
    );
    if !search_path.is_empty() {
        let schemas: Vec<String> =
            search_path.iter().map(|s| crate::schema::ddl_ident(Dialect::Postgres, s)).collect();
        sql.push_str(&format!("; SET LOCAL search_path = {}, pg_temp", schemas.join(", ")));
    }
    sql
}

impl Executor for PostgresExecutor {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn discover<'a>(
        &'a self,
        options: &'a DiscoverOptions,
    ) -> BoxFuture<'a, Result<Schema, ExecError>> {
        Box::pin(async move {
            let mut client = self.pool.get().await.map_err(pool_error)?;
            let pg: &mut tokio_postgres::Client = &mut client;
            // One snapshot for every catalog query, so they agree on which relations exist.
            let txn = pg
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(db_error)?;
            txn.batch_execute(&local_settings(DISCOVER_TIMEOUT, Duration::from_secs(5), &[]))
                .await
                .map_err(db_error)?;
            let schema = pg_discover::discover(&txn, options).await.map_err(db_error)?;
            txn.rollback().await.map_err(db_error)?;
            Ok(schema)
        })
    }

    fn run<'a>(
        &'a self,
        query: &'a CheckedSql,
        limits: &'a RunLimits,
        rows: RowSender,
    ) -> BoxFuture<'a, Result<RunSummary, ExecError>> {
        Box::pin(async move {
            super::ensure_dialect(query, Dialect::Postgres)?;
            self.run_inner(query, limits, rows).await
        })
    }
}

fn receiver_closed() -> ExecError {
    ExecError::new(ExecErrorCode::ReceiverClosed, "the receiver of the rows went away")
}

fn timeout_error(limit: Duration) -> ExecError {
    ExecError::new(
        ExecErrorCode::Timeout,
        format!("the query ran longer than {} ms and was cancelled", limit.as_millis()),
    )
}

fn pool_error(e: deadpool_postgres::PoolError) -> ExecError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db_error(e),
        other => ExecError::new(
            ExecErrorCode::DatabaseUnavailable,
            format!("could not get a database connection: {other}"),
        ),
    }
}

/// Maps a driver error to the closed set of codes, keeping PostgreSQL's SQLSTATE.
fn db_error(e: tokio_postgres::Error) -> ExecError {
    let Some(db) = e.as_db_error() else {
        return ExecError::new(
            ExecErrorCode::DatabaseUnavailable,
            format!("database connection failed: {e}"),
        );
    };
    let code = match *db.code() {
        SqlState::QUERY_CANCELED => ExecErrorCode::Timeout,
        SqlState::INSUFFICIENT_PRIVILEGE => ExecErrorCode::PermissionDenied,
        SqlState::ADMIN_SHUTDOWN
        | SqlState::CRASH_SHUTDOWN
        | SqlState::CANNOT_CONNECT_NOW
        | SqlState::TOO_MANY_CONNECTIONS
        | SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT => ExecErrorCode::DatabaseUnavailable,
        _ => ExecErrorCode::QueryFailed,
    };
    let mut message = db.message().to_owned();
    if let Some(hint) = db.hint() {
        message.push_str(&format!(" (hint: {hint})"));
    }
    ExecError { code, message, sqlstate: Some(db.code().code().to_owned()) }
}
