//! Layer 2 on its own: with the guard switched off, every attack of the
//! corpus runs through the PostgreSQL executor as a role that owns the data and
//! may write it, and the read-only envelope must leave the data unchanged.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use custard_testkit::{ScratchDb, connect, testdata_jsonl_lines, url_with_user};

use super::postgres::PostgresExecutor;
use super::{ExecErrorCode, Executor, RunLimits};
use crate::{CheckedSql, Dialect};

/// Canary objects named after what the attacks touch, owned by the role that runs them.
const SETUP: &str = "
    CREATE SCHEMA app; CREATE SCHEMA hr;
    CREATE TABLE users (id int PRIMARY KEY, name text, role text);
    INSERT INTO users SELECT g, 'user ' || g, 'member' FROM generate_series(1, 50) g;
    CREATE TABLE t (id int PRIMARY KEY, created_at date);
    INSERT INTO t SELECT g, DATE '2020-01-01' + g FROM generate_series(1, 100) g;
    CREATE TABLE s (id int PRIMARY KEY);
    INSERT INTO s SELECT generate_series(1, 10);
    CREATE TABLE audit (msg text);
    INSERT INTO audit VALUES ('created');
    CREATE TABLE accounts (id int PRIMARY KEY, balance numeric);
    INSERT INTO accounts SELECT g, g * 10 FROM generate_series(1, 20) g;
    CREATE TABLE orders (id bigserial PRIMARY KEY, note text);
    INSERT INTO orders (note) SELECT 'order ' || g FROM generate_series(1, 30) g;
    CREATE TABLE big (id int);
    INSERT INTO big SELECT generate_series(1, 1000);
    CREATE TABLE hr.salaries (id int, amount numeric);
    INSERT INTO hr.salaries VALUES (1, 100000);
    CREATE SEQUENCE invoice_seq;
    CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS n FROM t;
    CREATE PROCEDURE app.purge_old_rows() LANGUAGE sql AS 'DELETE FROM t';
";

/// Every user table's row count and checksum, sequence positions, the list of
/// relations and the number of large objects.
async fn snapshot(client: &tokio_postgres::Client) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let relations = client
        .query(
            "SELECT n.nspname || '.' || c.relname, c.relkind::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_%' \
             ORDER BY 1",
            &[],
        )
        .await
        .expect("listing relations");
    let names: Vec<(String, String)> = relations.iter().map(|r| (r.get(0), r.get(1))).collect();
    out.insert("relations".into(), format!("{names:?}"));
    for (name, kind) in &names {
        let sql = match kind.as_str() {
            "r" | "m" => format!(
                "SELECT count(*)::text || ':' || coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '') FROM {name} x"
            ),
            "S" => format!("SELECT last_value::text || ':' || is_called::text FROM {name}"),
            _ => continue,
        };
        let row = client.query_one(&sql, &[]).await.expect("checksumming");
        out.insert(name.clone(), row.get(0));
    }
    let lo = client
        .query_one("SELECT count(*)::text FROM pg_largeobject_metadata", &[])
        .await
        .expect("large objects");
    out.insert("large_objects".into(), lo.get(0));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_only_envelope_stops_every_attack_that_passes_layer_one() {
    let db = ScratchDb::create("layer2").await;
    let role = format!("custard_t_l2_{}", std::process::id());
    let admin = db.client().await;
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN; \
             ALTER DATABASE \"{db}\" OWNER TO {role}; ALTER SCHEMA public OWNER TO {role}; \
             SET ROLE {role}; {SETUP} RESET ROLE",
            db = db.name
        ))
        .await
        .expect("setting up the canaries");
    let before = snapshot(&admin).await;

    let executor =
        PostgresExecutor::connect(&url_with_user(&db.url, &role)).await.expect("connect as owner");
    let limits = RunLimits { timeout: Duration::from_secs(2), ..RunLimits::default() };
    let mut outcomes = Vec::new();
    for line in testdata_jsonl_lines("security/attacks.jsonl") {
        let attack: serde_json::Value = serde_json::from_str(&line).expect("attack line");
        let id = attack["id"].as_str().expect("id").to_owned();
        let sql = attack["sql"].as_str().expect("sql");
        let unchecked = CheckedSql::for_test(sql, Dialect::Postgres, None);
        let started = Instant::now();
        let result = executor.query(&unchecked, &limits).await;
        assert!(started.elapsed() < Duration::from_secs(5), "{id} ran past its deadline");
        outcomes.push((id, result.map(|r| r.summary.row_count).map_err(|e| (e.code, e.message))));
    }
    for (id, outcome) in &outcomes {
        eprintln!("{id:24} {outcome:?}");
    }

    let after = snapshot(&admin).await;
    assert_eq!(before, after, "the data changed although every run rolled back read-only");

    // The writes themselves must have failed, not merely been rolled back.
    let must_fail = [
        "dml-cte-delete",
        "dml-cte-update",
        "dml-cte-insert",
        "dml-cte-nested",
        "prefix-with-delete",
        "select-into",
        "select-into-temp",
        "for-update",
        "for-share",
        "for-key-share",
        "multi-stmt-drop",
        "multi-stmt-commit",
        "multi-stmt-trailing",
        "setval",
        "nextval",
        "lo-import",
        "refresh-mv",
        "truncate",
        "drop",
        "create-table-as",
        "grant",
        "comment-on",
        "insert",
        "update",
        "delete",
        "merge",
        "union-dml-subquery",
        "comment-hidden-stmt",
        "line-comment-stmt",
        "call-proc",
        "alter-system",
        "vacuum-full",
        "copy-from-file",
        "copy-to-program",
        "copy-to-file",
        "read-file",
        "pg-authid",
    ];
    for id in must_fail {
        let outcome = outcomes.iter().find(|(i, _)| i == id).map(|(_, o)| o);
        assert!(
            matches!(outcome, Some(Err(_))),
            "{id} should have failed in the envelope: {outcome:?}"
        );
    }
    let sleep = outcomes.iter().find(|(i, _)| i == "pg-sleep").map(|(_, o)| o);
    assert!(
        matches!(sleep, Some(Err((ExecErrorCode::Timeout, _)))),
        "pg_sleep(3600) must be cut off by the statement timeout: {sleep:?}"
    );

    // A session-level advisory lock survives a rollback, so the executor releases them.
    let held = admin
        .query_one("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'", &[])
        .await
        .expect("reading locks");
    assert_eq!(held.get::<_, i64>(0), 0, "an advisory lock outlived its query");

    drop(executor);
    drop(db);
    // The role can go once its database is gone.
    let _ = connect(&custard_testkit::test_database_url())
        .await
        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
        .await;
}

/// The envelope's settings hold whatever the database's defaults say: a
/// database that gives every session 1 GB of `work_mem` and a long statement
/// timeout still runs each question with the executor's own limits.
#[tokio::test]
async fn the_envelope_overrides_database_defaults() {
    let db = ScratchDb::create("layer2_envelope").await;
    let admin = connect(&db.url).await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{0}\" SET work_mem = '1GB'; \
             ALTER DATABASE \"{0}\" SET statement_timeout = '1h'",
            db.name
        ))
        .await
        .expect("defaults");
    let executor = PostgresExecutor::connect(&db.url).await.expect("connect");
    let settings = CheckedSql::for_test(
        "SELECT current_setting('work_mem'), current_setting('statement_timeout'), \
         current_setting('transaction_read_only'), current_setting('search_path')",
        Dialect::Postgres,
        None,
    );
    let limits = RunLimits { timeout: Duration::from_secs(3), ..RunLimits::default() };
    let result = executor.query(&settings, &limits).await.expect("runs");
    assert_eq!(
        result.rows,
        vec![vec![
            serde_json::json!("32MB"),
            serde_json::json!("3s"),
            serde_json::json!("on"),
            serde_json::json!("public, pg_temp"),
        ]]
    );
}
