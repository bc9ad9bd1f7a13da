//! PostgreSQL schema discovery: a fixed handful of catalog queries, however
//! many tables the database holds.
//!
//! Four `SELECT`s on the catalogs (relations, columns, keys and, when asked
//! for, sample values) are sent together and pipelined on one connection, then
//! stitched into a [`Schema`] in memory. Each query restates the same relation
//! filter (the `rels` CTE), so they agree on which relations count:
//!
//! - every schema except `pg_catalog`, `information_schema` and the `pg_toast*`
//!   and `pg_temp_*` ones (user schemas cannot start with `pg_`);
//! - ordinary and partitioned tables, views, materialized views and foreign
//!   tables, but not partitions (the parent stands for them);
//! - only relations the current role may `SELECT` from, at table level or on at
//!   least one column, in a schema it has `USAGE` on; with column grants only,
//!   just the granted columns show.
//!
//! A key is kept only when every column it names, on both sides, is visible
//! and its referenced relation is listed (not hidden, not a partition), so the
//! schema never points the model at something the role cannot query.
//!
//! The caller runs this inside a read-only transaction. Under `READ COMMITTED`
//! each query takes its own snapshot, so rows about a relation created or
//! dropped in between are skipped rather than trusted.

use std::collections::HashMap;

use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, Row};

use super::DiscoverOptions;
use crate::{Column, Dialect, ForeignKey, Schema, Table, TableKind};

/// The relations discovery reports, as a CTE that every query starts with;
/// `whole` says the role may select every column.
macro_rules! with_rels {
    () => {
        "WITH rels AS (
            SELECT c.oid, n.nspname, c.relname, c.relkind, c.reltuples,
                pg_catalog.has_table_privilege(c.oid, 'SELECT') AS whole
            FROM pg_catalog.pg_class c
            JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
              AND NOT c.relispartition
              AND n.nspname <> 'information_schema'
              AND n.nspname NOT LIKE 'pg\\_%'
              AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')
              AND pg_catalog.has_any_column_privilege(c.oid, 'SELECT')
        ) "
    };
}

/// One row per relation. Partitioned tables keep no row count of their own, so
/// theirs is the sum over their analysed leaf partitions, grouped in one pass.
const RELATIONS_SQL: &str = concat!(
    with_rels!(),
    "SELECT r.oid, r.nspname::text, r.relname::text, r.relkind::text, d.description,
        CASE
            WHEN r.relkind = 'p' THEN leaves.total
            WHEN r.relkind = 'v' OR r.reltuples < 0 THEN NULL
            ELSE r.reltuples::bigint
        END
    FROM rels r
    LEFT JOIN pg_catalog.pg_description d
        ON d.objoid = r.oid AND d.classoid = 'pg_catalog.pg_class'::regclass AND d.objsubid = 0
    LEFT JOIN (
        SELECT pg_catalog.pg_partition_root(p.oid) AS root, sum(p.reltuples)::bigint AS total
        FROM pg_catalog.pg_class p
        WHERE p.relispartition AND p.relkind IN ('r', 'f') AND p.reltuples >= 0
        GROUP BY 1
    ) leaves ON leaves.root = r.oid"
);

/// One row per visible column, in ordinal order. Comments come from a join
/// rather than `col_description()`, which would run a subquery per column; the
/// per-column privilege check runs only for relations without table-level SELECT.
const COLUMNS_SQL: &str = concat!(
    with_rels!(),
    "SELECT a.attrelid, a.attnum, a.attname::text,
        pg_catalog.format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
        pg_catalog.pg_get_expr(ad.adbin, ad.adrelid), d.description
    FROM rels r
    JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid
    LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    LEFT JOIN pg_catalog.pg_description d
        ON d.objoid = a.attrelid AND d.classoid = 'pg_catalog.pg_class'::regclass
        AND d.objsubid = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped
      AND (r.whole OR pg_catalog.has_column_privilege(a.attrelid, a.attnum, 'SELECT'))
    ORDER BY a.attrelid, a.attnum"
);

/// Primary and foreign keys as column numbers in key order, mapped to names in
/// memory. Constraints with a parent (clones on partitions, or per-partition
/// copies of a foreign key that references a partitioned table) are skipped:
/// the parent constraint says it all.
const KEYS_SQL: &str = concat!(
    with_rels!(),
    "SELECT con.conrelid, con.contype::text, con.conkey, con.confrelid, con.confkey
    FROM pg_catalog.pg_constraint con
    WHERE con.contype IN ('p', 'f') AND con.conparentid = 0
      AND con.conrelid IN (SELECT oid FROM rels)
    ORDER BY con.conrelid, con.conname"
);

/// The first `$1` most common values of every string-like (category `S`:
/// text, varchar, char, citext, ...) or enum column. `pg_stats` hides columns
/// the role may not read, and it is probed per column (`OFFSET 0` keeps the
/// planner from expanding the whole view, privilege check on every catalog
/// column included). A table with inheritance children has two rows per
/// column; the one that includes the children (`inherited = true`), which is
/// what a query on the table reads, comes first.
const SAMPLES_SQL: &str = concat!(
    with_rels!(),
    "SELECT r.oid, a.attname::text, (s.most_common_vals::text::text[])[1:$1]
    FROM rels r
    JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid
    JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
    CROSS JOIN LATERAL (
        SELECT st.inherited, st.most_common_vals
        FROM pg_catalog.pg_stats st
        WHERE st.schemaname = r.nspname AND st.tablename = r.relname
          AND st.attname = a.attname AND st.most_common_vals IS NOT NULL
        OFFSET 0
    ) s
    WHERE a.attnum > 0 AND NOT a.attisdropped AND t.typcategory IN ('S', 'E')
    ORDER BY r.oid, a.attnum, s.inherited DESC"
);

/// Reads the schema of the database `client` is connected to: every table and
/// view the current role can select from, outside the system schemas, ordered
/// by (schema, name). Runs four catalog queries at most, pipelined.
pub(crate) async fn discover(
    client: &impl GenericClient,
    options: &DiscoverOptions,
) -> Result<Schema, tokio_postgres::Error> {
    let limit = i32::try_from(options.sample_values).unwrap_or(i32::MAX);
    let samples = async {
        if limit > 0 {
            client.query_typed(SAMPLES_SQL, &[(&limit, Type::INT4)]).await
        } else {
            Ok(Vec::new())
        }
    };
    // Unnamed-statement queries sent together: one round trip each, overlapped.
    let (relations, columns, keys, samples) = tokio::try_join!(
        client.query_typed(RELATIONS_SQL, &[]),
        client.query_typed(COLUMNS_SQL, &[]),
        client.query_typed(KEYS_SQL, &[]),
        samples,
    )?;
    assemble(&relations, &columns, &keys, &samples)
}

/// Builds the [`Schema`] from the rows of the four queries.
fn assemble(
    relations: &[Row],
    columns: &[Row],
    keys: &[Row],
    samples: &[Row],
) -> Result<Schema, tokio_postgres::Error> {
    let mut tables = Vec::with_capacity(relations.len());
    let mut index: HashMap<u32, usize> = HashMap::with_capacity(relations.len());
    for row in relations {
        let kind = match row.try_get::<_, &str>(3)? {
            "v" => TableKind::View,
            "m" => TableKind::MaterializedView,
            "f" => TableKind::Foreign,
            _ => TableKind::Table,
        };
        index.insert(row.try_get(0)?, tables.len());
        tables.push(Table {
            schema: row.try_get(1)?,
            name: row.try_get(2)?,
            kind,
            comment: row.try_get(4)?,
            columns: Vec::new(),
            primary_key: Vec::new(),
            foreign_keys: Vec::new(),
            row_estimate: row.try_get(5)?,
        });
    }

    // (relation, column number) -> (table index, column index), to name key columns.
    let mut positions: HashMap<(u32, i16), (usize, usize)> = HashMap::with_capacity(columns.len());
    for row in columns {
        let oid: u32 = row.try_get(0)?;
        let Some(&i) = index.get(&oid) else { continue };
        positions.insert((oid, row.try_get(1)?), (i, tables[i].columns.len()));
        tables[i].columns.push(Column {
            name: row.try_get(2)?,
            data_type: row.try_get(3)?,
            nullable: row.try_get(4)?,
            default: row.try_get(5)?,
            comment: row.try_get(6)?,
            sample_values: Vec::new(),
        });
    }
    // Names of `attnums` of relation `oid`, or None when one is not visible.
    let column_names = |oid: u32, attnums: &[i16]| -> Option<Vec<String>> {
        attnums
            .iter()
            .map(|n| positions.get(&(oid, *n)).map(|&(t, c)| tables[t].columns[c].name.clone()))
            .collect()
    };

    let mut primary_keys = Vec::new();
    let mut foreign_keys = Vec::new();
    for row in keys {
        let oid: u32 = row.try_get(0)?;
        let Some(&i) = index.get(&oid) else { continue };
        let Some(columns) = column_names(oid, &row.try_get::<_, Vec<i16>>(2)?) else { continue };
        if row.try_get::<_, &str>(1)? == "p" {
            primary_keys.push((i, columns));
            continue;
        }
        let referenced: u32 = row.try_get(3)?;
        let Some(&j) = index.get(&referenced) else { continue };
        let confkey: Option<Vec<i16>> = row.try_get(4)?;
        let Some(referenced_columns) = column_names(referenced, &confkey.unwrap_or_default())
        else {
            continue;
        };
        foreign_keys.push((
            i,
            ForeignKey {
                columns,
                referenced_schema: tables[j].schema.clone(),
                referenced_table: tables[j].name.clone(),
                referenced_columns,
            },
        ));
    }
    for (i, columns) in primary_keys {
        tables[i].primary_key = columns;
    }
    for (i, fk) in foreign_keys {
        tables[i].foreign_keys.push(fk);
    }

    let mut last: Option<(u32, String)> = None;
    for row in samples {
        let oid: u32 = row.try_get(0)?;
        let name: String = row.try_get(1)?;
        let Some(&i) = index.get(&oid) else { continue };
        // Rows come per column, the one with children first: keep only that one.
        if last.as_ref().is_some_and(|(o, n)| *o == oid && *n == name) {
            continue;
        }
        let values: Vec<Option<String>> = row.try_get(2)?;
        if let Some(column) = tables[i].columns.iter_mut().find(|c| c.name == name) {
            column.sample_values = values.into_iter().flatten().collect();
        }
        last = Some((oid, name));
    }

    // Byte order, whatever the database's collation.
    tables.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    Ok(Schema { dialect: Dialect::Postgres, tables })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use custard_testkit::{ScratchDb, connect, test_database_url};

    use super::*;

    /// Two schemas, every relation kind, composite and cross-schema keys,
    /// comments, defaults, an enum, a partitioned table and a hidden table.
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
        let db = ScratchDb::create("pgdisc").await;
        db.client().await.batch_execute(FIXTURE).await.expect("loading the fixture");
        db
    }

    async fn discover_with(client: &tokio_postgres::Client, samples: usize) -> Schema {
        let options = DiscoverOptions { sample_values: samples };
        discover(client, &options).await.expect("discovery")
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
        let schema = discover_with(&db.client().await, 0).await;
        assert_eq!(schema.dialect, Dialect::Postgres);
        let got: Vec<_> = schema
            .tables
            .iter()
            .map(|t| {
                (t.schema.as_str(), t.name.as_str(), t.kind, t.comment.as_deref(), t.row_estimate)
            })
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
        let schema = discover_with(&db.client().await, 0).await;
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
        let schema = discover_with(&db.client().await, 0).await;
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
        let client = db.client().await;
        let schema = discover_with(&client, 5).await;
        let set =
            |c: &str| column(&schema, c).sample_values.iter().cloned().collect::<BTreeSet<_>>();
        assert_eq!(column(&schema, "public.customers.mood").sample_values, ["happy", "sad", "meh"]);
        assert_eq!(column(&schema, "public.customers.code").sample_values, ["abc"]);
        assert_eq!(set("sales.events.kind"), ["k0", "k1", "k2", "k3"].map(String::from).into());
        // Unique values have no most-common list; numbers and dates are not text.
        for c in [
            "public.customers.name",
            "public.customers.id",
            "public.customers.balance",
            "sales.events.happened",
        ] {
            assert!(column(&schema, c).sample_values.is_empty(), "{c}");
        }
        let two = discover_with(&client, 2).await;
        assert_eq!(
            two.table("public", "customers")
                .and_then(|t| t.column("mood"))
                .map(|c| c.sample_values.clone()),
            Some(vec!["happy".to_owned(), "sad".to_owned()])
        );
        // Statistics are not structure.
        assert_eq!(two.fingerprint(), schema.fingerprint());
    }

    #[tokio::test]
    async fn samples_of_an_inheritance_parent_include_its_children() {
        let db = ScratchDb::create("pgdisc").await;
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
        let schema = discover_with(&client, 5).await;
        // `SELECT kind FROM animals` reads dogs too, so the dogs' value leads.
        assert_eq!(column(&schema, "public.animals.kind").sample_values, ["dog", "cat"]);
        assert_eq!(column(&schema, "public.dogs.kind").sample_values, ["dog"]);
    }

    #[tokio::test]
    async fn tables_never_analysed_have_no_estimate_and_no_samples() {
        let db = ScratchDb::create("pgdisc").await;
        let client = db.client().await;
        client
            .batch_execute(
                "CREATE TABLE t (label text); INSERT INTO t SELECT 'x' FROM generate_series(1, 50)",
            )
            .await
            .expect("setup");
        let schema = discover_with(&client, 5).await;
        let t = table(&schema, "public.t");
        assert_eq!(t.row_estimate, None);
        assert!(t.columns[0].sample_values.is_empty());
        client.batch_execute("ANALYZE t").await.expect("analyze");
        let schema = discover_with(&client, 5).await;
        let t = table(&schema, "public.t");
        assert_eq!(t.row_estimate, Some(50));
        assert_eq!(t.columns[0].sample_values, ["x"]);
    }

    /// A login role dropped when this value is dropped (after the scratch
    /// database that holds its grants, when declared before it).
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
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build()
                else {
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
        let limited = connect(&url_with_user(&db.url, r)).await;
        let schema = discover_with(&limited, 5).await;
        let got: Vec<_> =
            schema.tables.iter().map(|t| (t.schema.as_str(), t.name.as_str())).collect();
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
        let first = discover_with(&client, 3).await;
        let mut previous = discover_with(&client, 3).await;
        assert_eq!(first, previous, "discovery is deterministic");
        // (what happens, SQL, whether the fingerprint must change)
        let steps = [
            (
                "more rows, re-analysed",
                "INSERT INTO public.customers SELECT i, 'd' || i FROM generate_series(1000, 1999) AS i;
                 ANALYZE public.customers",
                false,
            ),
            ("column type changed", "ALTER TABLE public.customers ALTER COLUMN balance TYPE numeric(12,2)", true),
            ("table comment changed", "COMMENT ON TABLE sales.orders IS 'Orders'", true),
            ("column made nullable", "ALTER TABLE sales.orders ALTER COLUMN status DROP NOT NULL", true),
            ("column added", "ALTER TABLE public.secrets ADD COLUMN extra text", true),
            ("unrelated vacuum", "VACUUM ANALYZE", false),
        ];
        for (what, sql, changes) in steps {
            client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{what}: {e}"));
            let next = discover_with(&client, 3).await;
            assert_eq!(next.fingerprint() != previous.fingerprint(), changes, "{what}");
            if what.starts_with("more rows") {
                assert_ne!(next, previous, "{what}: the estimate moved, the fingerprint did not");
            }
            previous = next;
        }
    }
}
