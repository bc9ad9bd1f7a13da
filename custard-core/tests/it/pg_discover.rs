//! PostgreSQL schema discovery through the public API: `PostgresExecutor::discover`.

use std::collections::BTreeSet;

use custard_core::{
    Column, Dialect, DiscoverOptions, Executor, ForeignKey, PostgresExecutor, Schema, Table,
    TableKind,
};
use custard_testkit::{ScratchDb, connect, test_database_url};

/// Two schemas, every relation kind, composite and cross-schema keys,
/// comments, defaults, an enum, a partitioned table and a table to hide.
const FIXTURE: &str = r"
    CREATE SCHEMA sales;
    CREATE TYPE public.mood AS ENUM ('happy', 'sad', 'meh');
    CREATE TABLE public.customers (
        id integer PRIMARY KEY,
        name varchar(20) NOT NULL,
        balance numeric(10,2) DEFAULT 0,
        mood mood,
        code char(3)
    );
    COMMENT ON TABLE public.customers IS 'People who buy things';
    COMMENT ON COLUMN public.customers.name IS 'Full name';
    CREATE TABLE sales.orders (
        region text NOT NULL,
        order_no integer NOT NULL,
        customer_id integer REFERENCES public.customers (id),
        status text NOT NULL DEFAULT 'new',
        total numeric(10,2),
        PRIMARY KEY (order_no, region)
    );
    COMMENT ON COLUMN sales.orders.total IS 'Including tax';
    CREATE TABLE sales.order_lines (
        line_no integer NOT NULL,
        region text NOT NULL,
        order_no integer NOT NULL,
        qty integer NOT NULL DEFAULT 1,
        PRIMARY KEY (region, order_no, line_no),
        FOREIGN KEY (order_no, region) REFERENCES sales.orders (order_no, region)
    );
    CREATE TABLE sales.events (
        id bigint NOT NULL,
        happened date NOT NULL,
        kind text,
        PRIMARY KEY (id, happened)
    ) PARTITION BY RANGE (happened);
    CREATE TABLE sales.events_2023 PARTITION OF sales.events
        FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
    CREATE TABLE sales.events_2024 PARTITION OF sales.events
        FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
    CREATE TABLE public.event_notes (
        event_id bigint,
        happened date,
        note text,
        FOREIGN KEY (event_id, happened) REFERENCES sales.events (id, happened)
    );
    CREATE VIEW sales.big_orders AS
        SELECT region, order_no, total FROM sales.orders WHERE total > 100;
    COMMENT ON VIEW sales.big_orders IS 'Orders over 100';
    CREATE MATERIALIZED VIEW public.mood_counts AS
        SELECT mood, count(*) AS n FROM public.customers GROUP BY mood;
    CREATE FOREIGN DATA WRAPPER custard_dummy_fdw;
    CREATE SERVER custard_dummy_server FOREIGN DATA WRAPPER custard_dummy_fdw;
    CREATE FOREIGN TABLE public.remote_things (id integer, label text)
        SERVER custard_dummy_server;
    CREATE TABLE public.secrets (id integer PRIMARY KEY, token text);
    INSERT INTO public.customers
        SELECT i, 'c' || i, i,
               CASE WHEN i % 6 < 3 THEN 'happy' WHEN i % 6 < 5 THEN 'sad' ELSE 'meh' END::mood,
               'abc'
        FROM generate_series(1, 300) AS i;
    INSERT INTO sales.events
        SELECT i, DATE '2023-06-01' + (i % 400), 'k' || (i % 4)
        FROM generate_series(1, 1000) AS i;
    ANALYZE;
";

async fn fixture() -> ScratchDb {
    let db = ScratchDb::create("itdisc").await;
    db.client().await.batch_execute(FIXTURE).await.expect("loading the fixture");
    db
}

async fn discover(url: &str, sample_values: usize) -> Schema {
    let executor = PostgresExecutor::connect(url).await.expect("connecting");
    executor.discover(&DiscoverOptions { sample_values }).await.expect("discovery")
}

fn table<'a>(schema: &'a Schema, qualified: &str) -> &'a Table {
    let (s, n) = qualified.split_once('.').expect("schema.table");
    schema.table(s, n).unwrap_or_else(|| panic!("{qualified} not discovered"))
}

fn column<'a>(schema: &'a Schema, qualified: &str) -> &'a Column {
    let (t, c) = qualified.rsplit_once('.').expect("schema.table.column");
    table(schema, t).column(c).unwrap_or_else(|| panic!("{qualified} not discovered"))
}

fn names(table: &Table) -> Vec<&str> {
    table.columns.iter().map(|c| c.name.as_str()).collect()
}

#[tokio::test]
async fn relations_kinds_comments_and_estimates() {
    let db = fixture().await;
    let schema = discover(&db.url, 0).await;
    assert_eq!(schema.dialect, Dialect::Postgres);
    let got: Vec<_> = schema
        .tables
        .iter()
        .map(|t| (t.schema.as_str(), t.name.as_str(), t.kind, t.comment.as_deref(), t.row_estimate))
        .collect();
    // Partitions are absent; the partitioned parent sums their estimates.
    let want = vec![
        ("public", "customers", TableKind::Table, Some("People who buy things"), Some(300)),
        ("public", "event_notes", TableKind::Table, None, Some(0)),
        ("public", "mood_counts", TableKind::MaterializedView, None, Some(0)),
        ("public", "remote_things", TableKind::Foreign, None, None),
        ("public", "secrets", TableKind::Table, None, Some(0)),
        ("sales", "big_orders", TableKind::View, Some("Orders over 100"), None),
        ("sales", "events", TableKind::Table, None, Some(1000)),
        ("sales", "order_lines", TableKind::Table, None, Some(0)),
        ("sales", "orders", TableKind::Table, None, Some(0)),
    ];
    assert_eq!(got, want);
}

#[tokio::test]
async fn columns_types_defaults_and_comments() {
    let db = fixture().await;
    let schema = discover(&db.url, 0).await;
    assert_eq!(
        names(table(&schema, "public.customers")),
        ["id", "name", "balance", "mood", "code"]
    );
    assert_eq!(
        names(table(&schema, "sales.order_lines")),
        ["line_no", "region", "order_no", "qty"]
    );
    // (column, data_type, nullable, default, comment)
    let cases = [
        ("public.customers.id", "integer", false, None, None),
        ("public.customers.name", "character varying(20)", false, None, Some("Full name")),
        ("public.customers.balance", "numeric(10,2)", true, Some("0"), None),
        ("public.customers.mood", "mood", true, None, None),
        ("public.customers.code", "character(3)", true, None, None),
        ("sales.orders.status", "text", false, Some("'new'::text"), None),
        ("sales.orders.total", "numeric(10,2)", true, None, Some("Including tax")),
        ("sales.order_lines.qty", "integer", false, Some("1"), None),
        ("sales.events.happened", "date", false, None, None),
        ("sales.big_orders.total", "numeric(10,2)", true, None, None),
        ("public.mood_counts.n", "bigint", true, None, None),
        ("public.remote_things.label", "text", true, None, None),
    ];
    for (name, data_type, nullable, default, comment) in cases {
        let c = column(&schema, name);
        assert_eq!(c.data_type, data_type, "{name} type");
        assert_eq!(c.nullable, nullable, "{name} nullable");
        assert_eq!(c.default.as_deref(), default, "{name} default");
        assert_eq!(c.comment.as_deref(), comment, "{name} comment");
        assert!(c.sample_values.is_empty(), "{name}: no samples asked for");
    }
}

#[tokio::test]
async fn primary_and_foreign_keys_keep_column_order() {
    let db = fixture().await;
    let schema = discover(&db.url, 0).await;
    let pks = [
        ("public.customers", vec!["id"]),
        ("sales.orders", vec!["order_no", "region"]),
        ("sales.order_lines", vec!["region", "order_no", "line_no"]),
        ("sales.events", vec!["id", "happened"]),
        ("public.event_notes", vec![]),
        ("sales.big_orders", vec![]),
    ];
    for (t, want) in pks {
        assert_eq!(table(&schema, t).primary_key, want, "{t} primary key");
    }
    let fk = |cols: &[&str], s: &str, t: &str, refs: &[&str]| ForeignKey {
        columns: cols.iter().map(|c| c.to_string()).collect(),
        referenced_schema: s.into(),
        referenced_table: t.into(),
        referenced_columns: refs.iter().map(|c| c.to_string()).collect(),
    };
    let fks = [
        ("sales.orders", vec![fk(&["customer_id"], "public", "customers", &["id"])]),
        (
            "sales.order_lines",
            vec![fk(&["order_no", "region"], "sales", "orders", &["order_no", "region"])],
        ),
        // One key, not one per partition of the referenced table.
        (
            "public.event_notes",
            vec![fk(&["event_id", "happened"], "sales", "events", &["id", "happened"])],
        ),
        ("public.customers", vec![]),
        ("sales.events", vec![]),
    ];
    for (t, want) in fks {
        assert_eq!(table(&schema, t).foreign_keys, want, "{t} foreign keys");
    }
}

#[tokio::test]
async fn sample_values_come_from_statistics_of_text_columns() {
    let db = fixture().await;
    let schema = discover(&db.url, 5).await;
    let samples = |s: &Schema, c: &str| column(s, c).sample_values.clone();
    assert_eq!(samples(&schema, "public.customers.mood"), ["happy", "sad", "meh"]);
    assert_eq!(samples(&schema, "public.customers.code"), ["abc"]);
    let kinds: BTreeSet<String> = samples(&schema, "sales.events.kind").into_iter().collect();
    assert_eq!(kinds, ["k0", "k1", "k2", "k3"].map(String::from).into());
    // Unique values have no most-common list; numbers and dates are not text.
    for c in [
        "public.customers.name",
        "public.customers.id",
        "public.customers.balance",
        "sales.events.happened",
    ] {
        assert!(column(&schema, c).sample_values.is_empty(), "{c}");
    }
    let two = discover(&db.url, 2).await;
    assert_eq!(samples(&two, "public.customers.mood"), ["happy", "sad"]);
    // Statistics are not structure.
    assert_eq!(two.fingerprint(), schema.fingerprint());
}

/// A login role dropped when this value is dropped: declare it before the
/// scratch database holding its grants, so the database goes first.
#[derive(Debug)]
struct TempRole(String);

impl TempRole {
    async fn create() -> TempRole {
        let name = format!("custard_t_limited_{}_disc", std::process::id());
        connect(&test_database_url())
            .await
            .batch_execute(&format!("DROP ROLE IF EXISTS {name}; CREATE ROLE {name} LOGIN"))
            .await
            .expect("creating the role");
        TempRole(name)
    }
}

impl Drop for TempRole {
    fn drop(&mut self) {
        let sql = format!("DROP ROLE IF EXISTS {}", self.0);
        // A thread with its own runtime works inside and outside a runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&test_database_url(), tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client.batch_execute(&sql).await;
                }
            });
        })
        .join();
    }
}

/// `url` with its user replaced by `user` (and no password).
fn url_with_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}@{host}")
}

#[tokio::test]
async fn relations_and_columns_the_role_cannot_select_are_hidden() {
    let role = TempRole::create().await;
    let db = fixture().await;
    let r = &role.0;
    db.client()
        .await
        .batch_execute(&format!(
            "GRANT CONNECT ON DATABASE \"{}\" TO {r};
             GRANT USAGE ON SCHEMA sales TO {r};
             GRANT SELECT ON public.customers, public.event_notes, sales.order_lines TO {r};
             GRANT SELECT (region, order_no) ON sales.orders TO {r};
             -- SELECT without USAGE on the schema is no use: hr.salaries stays hidden.
             CREATE SCHEMA hr;
             CREATE TABLE hr.salaries (amount numeric);
             GRANT SELECT ON hr.salaries TO {r};",
            db.name
        ))
        .await
        .expect("granting");
    let schema = discover(&url_with_user(&db.url, r), 5).await;
    let got: Vec<_> = schema.tables.iter().map(|t| (t.schema.as_str(), t.name.as_str())).collect();
    assert_eq!(
        got,
        [
            ("public", "customers"),
            ("public", "event_notes"),
            ("sales", "order_lines"),
            ("sales", "orders")
        ]
    );
    assert_eq!(
        names(table(&schema, "public.customers")),
        ["id", "name", "balance", "mood", "code"]
    );
    let orders = table(&schema, "sales.orders");
    assert_eq!(names(orders), ["region", "order_no"]);
    assert_eq!(orders.primary_key, ["order_no", "region"]);
    // customer_id is not visible, so neither is the key built on it.
    assert!(orders.foreign_keys.is_empty());
    // sales.events is hidden, so the key to it goes too; both ends of this one are visible.
    assert!(table(&schema, "public.event_notes").foreign_keys.is_empty());
    assert_eq!(table(&schema, "sales.order_lines").foreign_keys.len(), 1);
    assert_eq!(column(&schema, "public.customers.mood").sample_values, ["happy", "sad", "meh"]);
}

#[tokio::test]
async fn fingerprint_follows_structure_not_data() {
    let db = fixture().await;
    let client = db.client().await;
    let first = discover(&db.url, 3).await;
    let mut previous = discover(&db.url, 3).await;
    assert_eq!(first, previous, "discovery is deterministic");
    // (what happens, SQL, whether the fingerprint must change)
    let steps = [
        (
            "more rows, re-analysed",
            "INSERT INTO public.customers SELECT i, 'd' || i FROM generate_series(1000, 1999) AS i;
             ANALYZE public.customers",
            false,
        ),
        (
            "column type changed",
            "ALTER TABLE public.customers ALTER COLUMN balance TYPE numeric(12,2)",
            true,
        ),
        ("table comment changed", "COMMENT ON TABLE sales.orders IS 'Orders'", true),
        (
            "column made nullable",
            "ALTER TABLE sales.orders ALTER COLUMN status DROP NOT NULL",
            true,
        ),
        ("column added", "ALTER TABLE public.secrets ADD COLUMN extra text", true),
        ("unrelated vacuum", "VACUUM ANALYZE", false),
    ];
    for (what, sql, changes) in steps {
        client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let next = discover(&db.url, 3).await;
        assert_eq!(next.fingerprint() != previous.fingerprint(), changes, "{what}");
        if what.starts_with("more rows") {
            assert_ne!(next, previous, "{what}: the estimate moved, the fingerprint did not");
        }
        previous = next;
    }
}

#[tokio::test]
async fn samples_of_an_inheritance_parent_include_its_children() {
    let db = ScratchDb::create("itdisc").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE animals (kind text);
             CREATE TABLE dogs () INHERITS (animals);
             INSERT INTO animals SELECT 'cat' FROM generate_series(1, 10);
             INSERT INTO dogs SELECT 'dog' FROM generate_series(1, 30);
             ANALYZE",
        )
        .await
        .expect("setup");
    let schema = discover(&db.url, 5).await;
    // `SELECT kind FROM animals` reads dogs too, so the dogs' value leads.
    assert_eq!(column(&schema, "public.animals.kind").sample_values, ["dog", "cat"]);
    assert_eq!(column(&schema, "public.dogs.kind").sample_values, ["dog"]);
}

#[tokio::test]
async fn tables_never_analysed_have_no_estimate_and_no_samples() {
    let db = ScratchDb::create("itdisc").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE t (label text); INSERT INTO t SELECT 'x' FROM generate_series(1, 50)",
        )
        .await
        .expect("setup");
    let before = discover(&db.url, 5).await;
    assert_eq!(table(&before, "public.t").row_estimate, None);
    assert!(column(&before, "public.t.label").sample_values.is_empty());
    client.batch_execute("ANALYZE t").await.expect("analyze");
    let after = discover(&db.url, 5).await;
    assert_eq!(table(&after, "public.t").row_estimate, Some(50));
    assert_eq!(column(&after, "public.t.label").sample_values, ["x"]);
}
