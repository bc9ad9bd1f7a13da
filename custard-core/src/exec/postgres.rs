//! The PostgreSQL executor: layer 2 of the read-only design.
//!
//! Each run takes a pooled connection and, inside `START TRANSACTION READ ONLY`
//! with `statement_timeout`, `lock_timeout` and
//! `idle_in_transaction_session_timeout` set locally, prepares the checked SQL
//! with the extended protocol (one statement per Parse), then pulls rows from a
//! portal in batches so the row and byte caps stop the work early. The
//! transaction always rolls back. A client-side deadline sends a cancel request
//! and throws the connection away.

use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Transaction};

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
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let cancel = client.cancel_token();
        let deadline = limits.timeout + CLIENT_GRACE;
        // Dropping the receiver is how a caller cancels: watch for it while the query runs.
        let watcher = rows.clone();
        let outcome = {
            let pg: &mut tokio_postgres::Client = &mut client;
            tokio::select! {
                result = tokio::time::timeout(deadline, stream(pg, query, limits, rows)) => {
                    result.map_err(|_| timeout_error(limits.timeout))
                }
                () = watcher.closed() => Err(receiver_closed()),
            }
        };
        match outcome {
            Ok(result) => {
                // Advisory locks are the one session state a rollback keeps; never
                // hand a connection holding one to the next query.
                if client.batch_execute("SELECT pg_advisory_unlock_all()").await.is_err() {
                    drop(deadpool_postgres::Object::take(client));
                }
                let (row_count, bytes, truncated) = result?;
                Ok(RunSummary { row_count, truncated, bytes, elapsed: started.elapsed() })
            }
            Err(e) => {
                // Missed deadline or cancelled by the caller: stop the server's work,
                // and never reuse this connection.
                let _ = cancel.cancel_query(NoTls).await;
                drop(deadpool_postgres::Object::take(client));
                Err(e)
            }
        }
    }
}

/// Runs the envelope on one connection; returns (rows, bytes, truncated).
async fn stream(
    client: &mut tokio_postgres::Client,
    query: &CheckedSql,
    limits: &RunLimits,
    rows: RowSender,
) -> Result<(u64, u64, bool), ExecError> {
    let txn = client.build_transaction().read_only(true).start().await.map_err(db_error)?;
    // One round trip for both: `biased` polls (and so sends) the timeouts
    // first, and PostgreSQL runs a connection's messages in order, so they are
    // set before anything of the query runs (preparing runs nothing).
    // prepare() is a Parse message: PostgreSQL refuses more than one statement in it.
    let (_, statement) = tokio::try_join!(
        biased;
        set_local_envelope(&txn, limits.timeout, limits.lock_timeout, query.search_path()),
        async { txn.prepare(query.sql()).await.map_err(db_error) },
    )?;
    let columns = statement
        .columns()
        .iter()
        .map(|c| ColumnMeta {
            name: c.name().to_owned(),
            type_name: pg_value::type_name(c.type_()),
        })
        .collect();
    rows.send(RowBatch::Columns(columns)).await.map_err(|_| receiver_closed())?;
    let portal = txn.bind(&statement, &[]).await.map_err(db_error)?;
    let mut caps = Caps::new(query, limits);
    let mut batch_rows = FIRST_FETCH_ROWS.min(limits.batch_rows.max(1));
    let mut truncated = false;
    'fetch: loop {
        let asked = i32::try_from(batch_rows).unwrap_or(i32::MAX);
        let fetched = txn.query_portal(&portal, asked).await.map_err(db_error)?;
        let exhausted = fetched.len() < batch_rows;
        let mut batch = Vec::with_capacity(fetched.len());
        let mut fetched_bytes = 0u64;
        for row in &fetched {
            let values = pg_value::row_values(row)?;
            let admitted = caps.admit(&values);
            fetched_bytes += values.iter().map(super::json_size).sum::<u64>();
            if !admitted {
                truncated = true;
                if !batch.is_empty() {
                    rows.send(RowBatch::Rows(batch)).await.map_err(|_| receiver_closed())?;
                }
                break 'fetch;
            }
            batch.push(values);
        }
        if !batch.is_empty() {
            rows.send(RowBatch::Rows(batch)).await.map_err(|_| receiver_closed())?;
        }
        if exhausted {
            break;
        }
        batch_rows = next_fetch_rows(fetched.len(), fetched_bytes, limits.batch_rows);
    }
    txn.rollback().await.map_err(db_error)?;
    Ok((caps.rows, caps.bytes, truncated))
}

/// Memory one sort or hash of a query may use before spilling to disk: a
/// role or database default cannot give a question more. (Disk is bounded by
/// `temp_file_limit`, which only a superuser may set: the role SQL the agent
/// prints sets it for the agent's role.)
const WORK_MEM: &str = "32MB";

/// Rows asked of the portal first, before the executor knows how large they are.
const FIRST_FETCH_ROWS: usize = 4;
/// About how many bytes one fetch may bring into memory. The driver holds a
/// whole fetch before any cap sees it, so the batch size follows the rows'
/// size: large rows come a few (or one) at a time.
const FETCH_BYTES: u64 = 1024 * 1024;

/// How many rows to fetch next, from the size of the rows just fetched.
fn next_fetch_rows(fetched: usize, fetched_bytes: u64, max_rows: usize) -> usize {
    let per_row = (fetched_bytes / fetched.max(1) as u64).max(1);
    usize::try_from(FETCH_BYTES / per_row).unwrap_or(usize::MAX).clamp(1, max_rows.max(1))
}

/// The transaction's local settings: time limits, `work_mem`, and the search
/// path the guard resolved names in (with `pg_temp` last, so no temporary table can
/// shadow a checked one; `pg_catalog` always comes first).
async fn set_local_envelope(
    txn: &Transaction<'_>,
    statement: Duration,
    lock: Duration,
    search_path: &[String],
) -> Result<(), ExecError> {
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
    txn.batch_execute(&sql).await.map_err(db_error)
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
            set_local_envelope(&txn, DISCOVER_TIMEOUT, Duration::from_secs(5), &[]).await?;
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
