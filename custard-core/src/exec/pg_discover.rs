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
