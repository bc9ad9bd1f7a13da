//! The SQLite executor against real database files: discovery, type mapping,
//! caps, timeouts and opening.
//!
//! Queries go through the guard, as they do in production.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use custard_core::{
    ColumnMeta, Dialect, DiscoverOptions, ExecErrorCode, Executor, Guard, RunLimits, Schema,
    SqliteExecutor, connect,
};
use serde_json::{Value, json};

/// A database file in a fresh temporary directory, built by `setup`.
fn database(setup: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test.db");
    rusqlite::Connection::open(&path).unwrap().execute_batch(setup).unwrap();
    (dir, path)
}

/// The schema as compact text: one line per table, column and foreign key.
fn render(schema: &Schema) -> String {
    let mut out = String::new();
    for t in &schema.tables {
        let rows = t.row_estimate.map_or(String::new(), |r| format!(" rows={r}"));
        let pk = if t.primary_key.is_empty() {
            String::new()
        } else {
            format!(" pk=({})", t.primary_key.join(", "))
        };
        writeln!(out, "{} {}.{}{rows}{pk}", t.kind.as_str(), t.schema, t.name).unwrap();
        assert_eq!(t.comment, None);
        for c in &t.columns {
            let null = if c.nullable { "" } else { " not null" };
            let default = c.default.as_ref().map_or(String::new(), |d| format!(" default {d}"));
            let samples = if c.sample_values.is_empty() {
                String::new()
            } else {
                format!(" samples={:?}", c.sample_values)
            };
            let line = format!("  {}: {}{null}{default}{samples}", c.name, c.data_type);
            writeln!(out, "{}", line.trim_end()).unwrap();
            assert_eq!(c.comment, None);
        }
        for fk in &t.foreign_keys {
            writeln!(
                out,
                "  fk ({}) -> {}.{}({})",
                fk.columns.join(", "),
                fk.referenced_schema,
                fk.referenced_table,
                fk.referenced_columns.join(", ")
            )
            .unwrap();
        }
    }
    out
}

fn check_discover(setup: &str, sample_values: usize, expected: &str) {
    let (_dir, path) = database(setup);
    let exec = SqliteExecutor::open(&path).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let schema = runtime.block_on(exec.discover(&DiscoverOptions { sample_values })).unwrap();
    assert_eq!(schema.dialect, Dialect::Sqlite);
    let expected: String = expected.lines().map(|l| format!("{}\n", l.trim_end())).collect();
    assert_eq!(render(&schema), expected.trim_start_matches('\n'), "{setup}");
}

const SHOP: &str = r#"
CREATE TABLE customers (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  country VARCHAR(40) DEFAULT 'France',
  created_at DATETIME DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE orders (
  id INTEGER PRIMARY KEY,
  customer_id INTEGER NOT NULL REFERENCES customers(id),
  status TEXT NOT NULL DEFAULT 'new',
  total NUMERIC(10, 2) DEFAULT 0
);
CREATE TABLE order_items (
  order_id INTEGER REFERENCES orders,
  line INT,
  product TEXT,
  qty INTEGER DEFAULT 1,
  PRIMARY KEY (order_id, line)
);
CREATE TABLE shipments (
  id INTEGER PRIMARY KEY,
  order_id INTEGER,
  line INTEGER,
  carrier TEXT,
  FOREIGN KEY (order_id, line) REFERENCES Order_Items(order_id, line)
);
CREATE TABLE tags (code TEXT PRIMARY KEY, label TEXT) WITHOUT ROWID;
CREATE TABLE "odd ""name""" (x, "y z" TEXT);
CREATE VIEW big_orders AS SELECT id, customer_id, total * 2 AS doubled FROM orders;
CREATE VIRTUAL TABLE notes USING fts5(body);
INSERT INTO customers (id, name, country) VALUES
  (1, 'Ann', 'France'), (2, 'Bob', 'Spain'), (3, 'Cy', 'France'),
  (4, 'Di', 'Italy'), (5, 'Ed', 'Spain'), (6, 'Flo', 'France');
INSERT INTO orders (id, customer_id, status, total) VALUES
  (1, 1, 'new', 10), (2, 2, 'shipped', 250), (3, 1, 'new', 40);
"#;

#[test]
fn discover() {
    check_discover(
        SHOP,
        0,
        r#"
view main.big_orders
  id: INTEGER
  customer_id: INTEGER
  doubled:
table main.customers pk=(id)
  id: INTEGER not null
  name: TEXT not null
  country: VARCHAR(40) default 'France'
  created_at: DATETIME default CURRENT_TIMESTAMP
table main.notes
  body:
table main.odd "name"
  x:
  y z: TEXT
table main.order_items pk=(order_id, line)
  order_id: INTEGER
  line: INT
  product: TEXT
  qty: INTEGER default 1
  fk (order_id) -> main.orders(id)
table main.orders pk=(id)
  id: INTEGER not null
  customer_id: INTEGER not null
  status: TEXT not null default 'new'
  total: NUMERIC(10, 2) default 0
  fk (customer_id) -> main.customers(id)
table main.shipments pk=(id)
  id: INTEGER not null
  order_id: INTEGER
  line: INTEGER
  carrier: TEXT
  fk (order_id, line) -> main.order_items(order_id, line)
table main.tags pk=(code)
  code: TEXT not null
  label: TEXT
"#,
    );
}

#[test]
fn discover_row_estimates_and_samples() {
    check_discover(
        &format!("{SHOP} ANALYZE;"),
        2,
        r#"
view main.big_orders
  id: INTEGER
  customer_id: INTEGER
  doubled:
table main.customers rows=6 pk=(id)
  id: INTEGER not null
  name: TEXT not null samples=["Ann", "Bob"]
  country: VARCHAR(40) default 'France' samples=["France", "Spain"]
  created_at: DATETIME default CURRENT_TIMESTAMP
table main.notes
  body:
table main.odd "name"
  x:
  y z: TEXT
table main.order_items pk=(order_id, line)
  order_id: INTEGER
  line: INT
  product: TEXT
  qty: INTEGER default 1
  fk (order_id) -> main.orders(id)
table main.orders rows=3 pk=(id)
  id: INTEGER not null
  customer_id: INTEGER not null
  status: TEXT not null default 'new' samples=["new", "shipped"]
  total: NUMERIC(10, 2) default 0
  fk (customer_id) -> main.customers(id)
table main.shipments pk=(id)
  id: INTEGER not null
  order_id: INTEGER
  line: INTEGER
  carrier: TEXT
  fk (order_id, line) -> main.order_items(order_id, line)
table main.tags pk=(code)
  code: TEXT not null
  label: TEXT
"#,
    );
}

#[test]
fn discover_edge_cases() {
    #[rustfmt::skip]
    let cases: &[(&str, &str)] = &[
        ("", ""),
        // A view over a dropped table cannot be described or queried: it is left out.
        ("CREATE TABLE a (x INTEGER); CREATE TABLE b (y TEXT);
          CREATE VIEW broken AS SELECT y FROM b; DROP TABLE b;",
         "table main.a\n  x: INTEGER\n"),
        // Generated columns are columns; an implicit key reference resolves to the parent's key.
        ("CREATE TABLE p (k TEXT PRIMARY KEY NOT NULL, v INTEGER, w INTEGER GENERATED ALWAYS AS (v * 2));
          CREATE TABLE c (pk REFERENCES p);",
         "table main.c\n  pk:\n  fk (pk) -> main.p(k)\ntable main.p pk=(k)\n  k: TEXT not null\n  v: INTEGER\n  w: INTEGER\n"),
        // A key to a table without a primary key names no columns: left out.
        ("CREATE TABLE p (v); CREATE TABLE c (x REFERENCES p);",
         "table main.c\n  x:\ntable main.p\n  v:\n"),
        ("CREATE TABLE t (a INTEGER, b TEXT, PRIMARY KEY (b, a)) WITHOUT ROWID;",
         "table main.t pk=(b, a)\n  a: INTEGER not null\n  b: TEXT not null\n"),
    ];
    for (setup, expected) in cases {
        check_discover(setup, 0, expected);
    }
}

/// Runs `sql` through the guard and the executor and compares the whole result.
async fn check_run(
    exec: &dyn Executor,
    sql: &str,
    limits: RunLimits,
    columns: &[(&str, &str)],
    rows: Value,
    truncated: bool,
) {
    let guard = Guard::builder(Dialect::Sqlite).build().unwrap();
    let checked = guard.check(sql).unwrap();
    let result = exec.query(&checked, &limits).await.unwrap();
    let expected_columns: Vec<ColumnMeta> = columns
        .iter()
        .map(|(n, t)| ColumnMeta { name: (*n).to_owned(), type_name: (*t).to_owned() })
        .collect();
    assert_eq!(result.columns, expected_columns, "{sql}");
    assert_eq!(Value::from(result.rows.clone()), rows, "{sql}");
    assert_eq!(result.summary.truncated, truncated, "{sql}");
    assert_eq!(result.summary.row_count, result.rows.len() as u64, "{sql}");
}

const KINDS: &str = r"
CREATE TABLE kinds (i INTEGER, r REAL, t TEXT, b BLOB, n NUMERIC, u);
INSERT INTO kinds VALUES
  (1, 2.5, 'x', x'00ff10', NULL, 7),
  (-9223372036854775808, 1e999, 'é ✓', x'', 3.25, 'text'),
  (NULL, -1e999, '', NULL, 10, x'ff');
CREATE TABLE n (i INTEGER PRIMARY KEY);
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 10)
INSERT INTO n SELECT i FROM c;
";

/// One query of [`run_through_the_guard`]: sql, limits, columns, rows, truncated.
type RunCase<'a> = (&'a str, RunLimits, &'a [(&'a str, &'a str)], Value, bool);

#[tokio::test]
async fn run_through_the_guard() {
    let (_dir, path) = database(KINDS);
    let exec = SqliteExecutor::open(&path).unwrap();
    let limits = |max_rows, max_bytes| RunLimits { max_rows, max_bytes, ..RunLimits::default() };
    let all = RunLimits::default();
    let ints = |n: i64| Value::from((1..=n).map(|i| json!([i])).collect::<Vec<_>>());
    let int = &[("i", "integer")][..];
    #[rustfmt::skip]
    let cases: Vec<RunCase<'_>> = vec![
        // Storage classes: NULL, INTEGER, REAL (non-finite as strings), TEXT, BLOB as base64.
        ("SELECT i, r, t, b, n, u FROM kinds ORDER BY rowid", all.clone(),
         &[("i", "integer"), ("r", "real"), ("t", "text"), ("b", "blob"), ("n", "numeric"), ("u", "integer")],
         json!([[1, 2.5, "x", "AP8Q", null, 7],
                [i64::MIN, "Infinity", "é ✓", "", 3.25, "text"],
                [null, "-Infinity", "", null, 10, "/w=="]]),
         false),
        // Columns without a declared type take the storage class of their first non-null value.
        ("SELECT i * 2 AS twice, t || '!' AS bang FROM kinds WHERE i = 1", all.clone(),
         &[("twice", "integer"), ("bang", "text")], json!([[2, "x!"]]), false),
        ("SELECT i FROM n ORDER BY i", all.clone(), int, ints(10), false),
        // Row cap.
        ("SELECT i FROM n ORDER BY i", limits(3, 1 << 20), int, ints(3), true),
        ("SELECT i FROM n ORDER BY i", limits(10, 1 << 20), int, ints(10), false),
        // Byte cap: a row counts its JSON, `[i]`: 3 bytes for rows 1 to 9.
        ("SELECT i FROM n ORDER BY i", limits(100, 3 * 4 + 2), int, ints(4), true),
        ("SELECT i FROM n ORDER BY i", limits(100, 1), int, json!([]), true),
    ];
    for (sql, limits, columns, rows, truncated) in cases {
        check_run(&exec, sql, limits, columns, rows, truncated).await;
    }
}

#[tokio::test]
async fn guard_row_limit_truncates() {
    let (_dir, path) = database(KINDS);
    let exec = SqliteExecutor::open(&path).unwrap();
    let guard = Guard::builder(Dialect::Sqlite).max_rows(4).build().unwrap();
    let checked = guard.check("SELECT i FROM n ORDER BY i").unwrap();
    let result = exec.query(&checked, &RunLimits::default()).await.unwrap();
    assert_eq!(result.rows, (1..=4).map(|i| vec![json!(i)]).collect::<Vec<_>>());
    assert!(result.summary.truncated);
}

#[tokio::test]
async fn timeout() {
    let (_dir, path) = database(KINDS);
    let exec = SqliteExecutor::open(&path).unwrap();
    let guard = Guard::builder(Dialect::Sqlite).build().unwrap();
    let endless = guard
        .check("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c")
        .unwrap();
    let limits = RunLimits { timeout: Duration::from_millis(200), ..RunLimits::default() };
    let err = exec.query(&endless, &limits).await.unwrap_err();
    assert_eq!(err.code, ExecErrorCode::Timeout, "{err}");
    // The executor still answers afterwards.
    let one = guard.check("SELECT count(*) AS c FROM n").unwrap();
    assert_eq!(exec.query(&one, &limits).await.unwrap().rows, vec![vec![json!(10)]]);
}

#[tokio::test]
async fn queries_leave_the_file_untouched() {
    let (dir, path) = database(KINDS);
    let before = std::fs::read(&path).unwrap();
    let exec = connect(&format!("sqlite:{}", path.display())).await.unwrap();
    exec.discover(&DiscoverOptions { sample_values: 5 }).await.unwrap();
    let checked =
        Guard::builder(Dialect::Sqlite).build().unwrap().check("SELECT * FROM kinds").unwrap();
    exec.query(&checked, &RunLimits::default()).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let files: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files, ["test.db"], "no journal or WAL file was created");
}

#[tokio::test]
async fn open_and_connect() {
    let (dir, path) = database(KINDS);
    let missing = dir.path().join("missing.db");
    for url in [format!("sqlite:{}", path.display()), format!("sqlite://{}", path.display())] {
        let exec = connect(&url).await.unwrap();
        assert_eq!(exec.dialect(), Dialect::Sqlite, "{url}");
        let schema = exec.discover(&DiscoverOptions::default()).await.unwrap();
        let names: Vec<&str> = schema.tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["kinds", "n"], "{url}");
    }
    let cases: &[(&str, &Path)] = &[("does not exist", &missing), ("is a directory", dir.path())];
    for (message, path) in cases {
        let err = SqliteExecutor::open(path).unwrap_err();
        assert_eq!(err.code, ExecErrorCode::DatabaseUnavailable, "{err}");
        assert!(err.message.contains(message), "{err}");
        let err = connect(&format!("sqlite:{}", path.display())).await.unwrap_err();
        assert_eq!(err.code, ExecErrorCode::DatabaseUnavailable, "{err}");
    }
    assert!(!missing.exists(), "opening created the file");
}
