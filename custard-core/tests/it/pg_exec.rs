//! The PostgreSQL executor through the public API: caps, streaming, deadlines, errors.

use std::time::{Duration, Instant};

use custard_core::{
    Dialect, ExecErrorCode, Executor, Guard, PostgresExecutor, RowBatch, RunLimits,
};
use custard_testkit::ScratchDb;
use serde_json::json;

async fn numbers_db() -> (ScratchDb, PostgresExecutor) {
    let db = ScratchDb::create("pg_exec").await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE n (i int PRIMARY KEY, label text); \
             INSERT INTO n SELECT g, repeat('x', 100) FROM generate_series(1, 5000) g",
        )
        .await
        .expect("setup");
    let executor = PostgresExecutor::connect(&db.url).await.expect("connect");
    (db, executor)
}

fn guard(max_rows: u64) -> Guard {
    Guard::builder(Dialect::Postgres).max_rows(max_rows).build().expect("guard")
}

#[tokio::test]
async fn row_caps_truncate_and_say_so() {
    let (_db, ex) = numbers_db().await;
    let limits = RunLimits::default();
    // (guard rows, executor rows, SQL, rows expected, truncated expected)
    let cases = [
        (100, 10_000, "SELECT i FROM n ORDER BY i", 100, true),
        (10_000, 10_000, "SELECT i FROM n ORDER BY i", 5000, false),
        (100, 10_000, "SELECT i FROM n ORDER BY i LIMIT 7", 7, false),
        (100, 100, "SELECT i FROM n ORDER BY i LIMIT 100", 100, false),
        (10_000, 250, "SELECT i FROM n ORDER BY i", 250, true),
    ];
    for (guard_rows, max_rows, sql, rows, truncated) in cases {
        let checked = guard(guard_rows).check(sql).expect("checked");
        let limits = RunLimits { max_rows, ..limits.clone() };
        let result = ex.query(&checked, &limits).await.expect("runs");
        assert_eq!(result.rows.len() as u64, rows, "{sql}");
        assert_eq!(result.summary.row_count, rows);
        assert_eq!(
            result.summary.truncated, truncated,
            "{sql} guard {guard_rows} executor {max_rows}"
        );
        assert_eq!(result.rows.first(), Some(&vec![json!(1)]), "order is kept through the wrapper");
    }
}

#[tokio::test]
async fn byte_cap_stops_early() {
    let (_db, ex) = numbers_db().await;
    let checked = guard(10_000).check("SELECT label FROM n ORDER BY i").expect("checked");
    let limits = RunLimits { max_bytes: 10_000, ..RunLimits::default() };
    let result = ex.query(&checked, &limits).await.expect("runs");
    assert!(result.summary.truncated);
    assert!(result.summary.bytes <= 10_000, "{}", result.summary.bytes);
    assert!(
        (90..=100).contains(&result.rows.len()),
        "{} rows of ~104 bytes fit in 10 kB",
        result.rows.len()
    );
}

#[tokio::test]
async fn rows_stream_in_batches_after_the_columns() {
    let (_db, ex) = numbers_db().await;
    let checked = guard(10_000).check("SELECT i, label FROM n ORDER BY i").expect("checked");
    let limits = RunLimits { batch_rows: 1000, ..RunLimits::default() };
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let collect = async {
        let mut batches = Vec::new();
        while let Some(b) = rx.recv().await {
            batches.push(b);
        }
        batches
    };
    let (summary, batches) = tokio::join!(ex.run(&checked, &limits, tx), collect);
    let summary = summary.expect("runs");
    assert_eq!(summary.row_count, 5000);
    let RowBatch::Columns(columns) = &batches[0] else { panic!("columns come first") };
    let names: Vec<(&str, &str)> =
        columns.iter().map(|c| (c.name.as_str(), c.type_name.as_str())).collect();
    assert_eq!(names, [("i", "int4"), ("label", "text")]);
    let mut seen = Vec::new();
    for batch in &batches[1..] {
        let RowBatch::Rows(rows) = batch else { panic!("columns only once") };
        // Batches carry what has arrived, never more than `batch_rows`.
        assert!((1..=1000).contains(&rows.len()), "a batch of {} rows", rows.len());
        seen.extend(rows.iter().map(|r| r[0].as_i64().expect("i")));
    }
    assert!(batches.len() > 5, "5,000 rows streamed in batches of at most 1,000");
    assert_eq!(seen, (1..=5000).collect::<Vec<i64>>(), "every row once, in order");
}

/// A cap that stops the read early stops the query in the database too,
/// rather than waiting for rows nobody reads; the connection is not reused
/// (a late cancel could hit its next query), and the next run works.
#[tokio::test]
async fn a_cap_that_stops_reading_stops_the_query() {
    let (db, ex) = numbers_db().await;
    // Unlimited rows: only the byte cap can stop this 50 GB result.
    let endless = Guard::builder(Dialect::Postgres)
        .unlimited_rows()
        .build()
        .expect("guard")
        .check("SELECT repeat('x', 1000) || g AS row FROM generate_series(1, 50000000) g")
        .expect("checked");
    let limits =
        RunLimits { max_bytes: 100_000, timeout: Duration::from_secs(60), ..RunLimits::default() };
    let started = Instant::now();
    let result = ex.query(&endless, &limits).await.expect("runs");
    assert!(result.summary.truncated);
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    let admin = db.client().await;
    let active = || async {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND query LIKE '%generate_series(1, 50000000)%' \
                 AND pid <> pg_backend_pid() AND state = 'active'",
                &[],
            )
            .await
            .expect("activity")
            .get::<_, i64>(0)
    };
    // The cancel is a signal: give the backend a moment to act on it.
    let mut running = active().await;
    for _ in 0..50 {
        if running == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        running = active().await;
    }
    assert_eq!(running, 0, "the query kept running after the cap stopped the read");
    let ok = guard(10).check("SELECT count(*) AS n FROM n").expect("checked");
    assert_eq!(ex.query(&ok, &RunLimits::default()).await.expect("runs").rows, [vec![json!(5000)]]);
}

#[tokio::test]
async fn a_slow_query_is_cancelled_at_its_deadline() {
    let (_db, ex) = numbers_db().await;
    // A heavy but allowed query: a large self cross join counted.
    let checked = guard(10).check("SELECT count(*) FROM n a, n b, n c").expect("checked");
    let limits = RunLimits { timeout: Duration::from_millis(300), ..RunLimits::default() };
    let started = Instant::now();
    let err = ex.query(&checked, &limits).await.expect_err("times out");
    assert_eq!(err.code, ExecErrorCode::Timeout, "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The executor still works afterwards.
    let ok = guard(10).check("SELECT 1 AS one").expect("checked");
    assert_eq!(ex.query(&ok, &RunLimits::default()).await.expect("runs").rows, [vec![json!(1)]]);
}

#[tokio::test]
async fn a_departed_receiver_ends_the_run() {
    let (_db, ex) = numbers_db().await;
    let checked = guard(10_000).check("SELECT i FROM n").expect("checked");
    let limits = RunLimits { batch_rows: 10, ..RunLimits::default() };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    drop(rx);
    let err = ex.run(&checked, &limits, tx).await.expect_err("nobody listens");
    assert_eq!(err.code, ExecErrorCode::ReceiverClosed);
}

#[tokio::test]
async fn errors_carry_a_code_and_the_sqlstate() {
    let (_db, ex) = numbers_db().await;
    let checked =
        guard(10).check("SELECT nope FROM n").expect("no schema given, so the guard lets it by");
    let err = ex.query(&checked, &RunLimits::default()).await.expect_err("unknown column");
    assert_eq!(err.code, ExecErrorCode::QueryFailed);
    assert_eq!(err.sqlstate.as_deref(), Some("42703"));
    assert!(err.message.contains("nope"), "{}", err.message);

    let sqlite =
        Guard::builder(Dialect::Sqlite).build().expect("guard").check("SELECT 1").expect("checked");
    let err = ex.query(&sqlite, &RunLimits::default()).await.expect_err("wrong dialect");
    assert_eq!(err.code, ExecErrorCode::Internal);
}

#[tokio::test]
async fn unreachable_and_malformed_databases_are_explained() {
    // Port 1 on loopback: nothing listens there.
    let err = PostgresExecutor::connect("postgres://postgres:secret@127.0.0.1:1/x")
        .await
        .expect_err("down");
    assert_eq!(err.code, ExecErrorCode::DatabaseUnavailable);
    assert!(!err.message.contains("secret"), "the password must not leak: {}", err.message);
    let err = PostgresExecutor::connect("postgres://h:notaport/x").await.expect_err("bad url");
    assert_eq!(err.code, ExecErrorCode::InvalidUrl);
    let err = custard_core::connect("mysql://x").await.expect_err("unsupported");
    assert_eq!(err.code, ExecErrorCode::InvalidUrl);
    // A pool made while the database is down connects later, on first use.
    let lazy = PostgresExecutor::new("postgres://postgres@127.0.0.1:1/x", 2).expect("built lazily");
    let checked = guard(10).check("SELECT 1").expect("checked");
    let err = lazy.query(&checked, &RunLimits::default()).await.expect_err("still down");
    assert_eq!(err.code, ExecErrorCode::DatabaseUnavailable);
}

/// The executor runs the guard's printed AST, not the input text: for tricky
/// literals and comments both must mean the same to PostgreSQL.
#[tokio::test]
async fn checked_sql_means_what_the_input_meant() {
    let (db, ex) = numbers_db().await;
    let direct = db.client().await;
    let cases = [
        r"SELECT 'it''s' AS a, E'a\'b\\c' AS b, $$dollar ' quoted$$ AS c, $t$ -- no comment $t$ AS d",
        r"SELECT 'a\' AS backslash_is_literal",
        "SELECT 1 /* ; DELETE FROM n */ + 2 AS three -- ; DROP TABLE n",
        "SELECT U&'\\0041' AS u, B'101'::text AS bits, 1e3::int AS e, 0.5 AS half",
        "SELECT count(*) AS c FROM n WHERE label LIKE 'x%' ESCAPE '!' AND i BETWEEN 2 AND 40",
        "SELECT string_agg(i::text, ',' ORDER BY i DESC) AS s FROM n WHERE i < 5",
    ];
    for sql in cases {
        let checked = guard(10).check(sql).expect("checked");
        let via_guard = ex.query(&checked, &RunLimits::default()).await.expect("runs");
        let raw = direct.simple_query(sql).await.expect("direct");
        let raw_row = raw
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .expect("a row");
        let raw_values: Vec<Option<&str>> = (0..raw_row.len()).map(|i| raw_row.get(i)).collect();
        let guarded: Vec<Option<String>> = via_guard.rows[0]
            .iter()
            .map(|v| match v {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            })
            .collect();
        let guarded: Vec<Option<&str>> = guarded.iter().map(|v| v.as_deref()).collect();
        assert_eq!(guarded, raw_values, "{sql} became {}", checked.sql());
    }
}

/// A caller cancels by dropping the receiver: the query stops in PostgreSQL too.
#[tokio::test]
async fn dropping_the_receiver_cancels_the_query_in_postgres() {
    let (db, ex) = numbers_db().await;
    let checked = guard(10).check("SELECT count(*) FROM n a, n b, n c").expect("checked");
    let limits = RunLimits { timeout: Duration::from_secs(60), ..RunLimits::default() };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let started = Instant::now();
    let run = ex.run(&checked, &limits, tx);
    let cancel = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(rx);
    };
    let (result, ()) = tokio::join!(run, cancel);
    assert_eq!(result.expect_err("cancelled").code, ExecErrorCode::ReceiverClosed);
    assert!(started.elapsed() < Duration::from_secs(10), "cancelled promptly, not at the deadline");
    let admin = db.client().await;
    let mut still_running = 1;
    for _ in 0..50 {
        still_running = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%n a, n b, n c%' AND state = 'active' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .expect("activity")
            .get::<_, i64>(0);
        if still_running == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(still_running, 0, "the query kept running in PostgreSQL");
}

/// The guard resolves unqualified names on its search path; the executor runs
/// the SQL with exactly that path, so a database-side default (`ALTER DATABASE
/// ... SET search_path`, a role setting, a `$user` schema) cannot point a
/// checked name at another table.
#[tokio::test]
async fn queries_run_on_the_search_path_the_guard_checked() {
    let db = ScratchDb::create("pg_search_path").await;
    let admin = db.client().await;
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA shadow; \
             CREATE TABLE public.t (v text); INSERT INTO public.t VALUES ('public'); \
             CREATE TABLE shadow.t (v text); INSERT INTO shadow.t VALUES ('shadow'); \
             ALTER DATABASE \"{}\" SET search_path = shadow, public",
            db.name
        ))
        .await
        .expect("setup");
    // New connections get the database's default path.
    let ex = PostgresExecutor::connect(&db.url).await.expect("connect");
    let read = |guard: Guard| {
        let ex = &ex;
        async move {
            let checked = guard.check("SELECT v FROM t").expect("checked");
            assert_eq!(checked.tables(), [format!("{}.t", checked.search_path()[0])]);
            ex.query(&checked, &RunLimits::default()).await.expect("runs").rows
        }
    };
    assert_eq!(read(guard(10)).await, vec![vec![json!("public")]]);
    let shadow = Guard::builder(Dialect::Postgres).search_path(["shadow"]).build().expect("guard");
    assert_eq!(read(shadow).await, vec![vec![json!("shadow")]]);
}

/// Large rows never pile up before a cap sees them: rows come one at a time
/// with the driver's backpressure, and a cap that stops the read cancels the
/// rest, so three concurrent runs of 490 rows of 2 MB each under a 20 kB byte
/// cap must not pull ~1 GB each into memory (they did once, with fixed fetches
/// of 500 rows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_rows_are_fetched_a_few_at_a_time() {
    let (_db, ex) = numbers_db().await;
    let checked = guard(10_000)
        .check("SELECT repeat('x', 2000000) || g AS big FROM generate_series(1, 490) g")
        .expect("checked");
    let limits = RunLimits { max_bytes: 20_000, ..RunLimits::default() };
    let peak = || custard_testkit::bins::status_kib(std::process::id(), "VmHWM").expect("VmHWM");
    let before = peak();
    let (a, b, c) = tokio::join!(
        ex.query(&checked, &limits),
        ex.query(&checked, &limits),
        ex.query(&checked, &limits)
    );
    for result in [a, b, c] {
        let result = result.expect("runs");
        assert!(result.summary.truncated, "the byte cap cut the result");
        assert!(result.rows.is_empty(), "no 2 MB row fits in 20 kB");
    }
    let grown = peak().saturating_sub(before);
    eprintln!("large rows: peak memory grew by {} MiB", grown / 1024);
    assert!(grown < 256 * 1024, "peak memory grew by {grown} KiB");
}
