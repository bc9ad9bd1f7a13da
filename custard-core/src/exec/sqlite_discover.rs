//! SQLite schema discovery: `sqlite_schema` joined with the pragma table-valued
//! functions, a handful of queries for the whole database, plus sample values.

use std::collections::HashMap;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, Row};

use super::sqlite::query_error;
use super::{DiscoverOptions, ExecError};
use crate::{AccessPolicy, Column, Dialect, ForeignKey, Schema, Table, TableKind};

/// The only schema discovered: attached and temporary databases are left out.
const SCHEMA: &str = "main";

/// At most this many columns get sample values, to bound the work on wide databases.
const MAX_SAMPLED_COLUMNS: usize = 200;

/// Sample values are the most frequent among this many rows of a table.
const SAMPLE_SCAN_ROWS: u64 = 100_000;

/// Longer values are left out of the samples: they help no one match a word.
const MAX_SAMPLE_CHARS: u32 = 100;

/// Tables and views, without SQLite's own `sqlite_*` tables and without the
/// shadow tables that hold the data of virtual tables (FTS, R-tree).
const TABLES: &str = r"
SELECT s.name, s.type = 'view', coalesce(l.wr, 0)
FROM main.sqlite_schema AS s
LEFT JOIN pragma_table_list AS l ON l.schema = 'main' AND l.name = s.name
WHERE s.type IN ('table', 'view')
  AND s.name NOT LIKE 'sqlite\_%' ESCAPE '\'
  AND coalesce(l.type, '') <> 'shadow'
ORDER BY s.name";

/// Columns of every table and view (or of the one named by `?1`), hidden
/// columns of virtual tables left out.
const COLUMNS: &str = r#"
SELECT s.name, c.name, c.type, c."notnull", c.dflt_value, c.pk
FROM main.sqlite_schema AS s
JOIN pragma_table_xinfo(s.name, 'main') AS c
WHERE s.type IN ('table', 'view')
  AND s.name NOT LIKE 'sqlite\_%' ESCAPE '\'
  AND (?1 IS NULL OR s.name = ?1)
  AND c.hidden <> 1
ORDER BY s.name, c.cid"#;

/// Foreign keys of every table (or of the one named by `?1`), one row per column pair.
const FOREIGN_KEYS: &str = r#"
SELECT s.name, f.id, f."table", f."from", f."to"
FROM main.sqlite_schema AS s
JOIN pragma_foreign_key_list(s.name, 'main') AS f
WHERE s.type = 'table'
  AND s.name NOT LIKE 'sqlite\_%' ESCAPE '\'
  AND (?1 IS NULL OR s.name = ?1)
ORDER BY s.name, f.id, f.seq"#;

const HAS_STAT1: &str = "SELECT EXISTS (SELECT 1 FROM main.sqlite_schema WHERE type = 'table' AND name = 'sqlite_stat1')";

/// `ANALYZE` stores a table's row count as the first number of each of its `stat` rows.
const ROW_ESTIMATES: &str =
    "SELECT tbl, max(CAST(stat AS INTEGER)) FROM main.sqlite_stat1 GROUP BY tbl";

/// A column as `pragma_table_xinfo` describes it.
struct ColumnRow {
    name: String,
    declared: String,
    not_null: bool,
    default: Option<String>,
    pk: i64,
}

/// One column pair of a foreign key as `pragma_foreign_key_list` describes it.
struct ForeignKeyRow {
    id: i64,
    table: String,
    from: String,
    /// `None` when the key references the parent's primary key implicitly.
    to: Option<String>,
}

/// Reads the tables and views of the `main` database; see [`Executor::discover`](super::Executor::discover).
///
/// Tables `policy` does not allow are left out, with the foreign keys that
/// reference them; masked columns stay (the guard must know them to refuse
/// them by name) but give no sample values.
pub(super) fn discover(
    conn: &Connection,
    options: &DiscoverOptions,
    policy: &AccessPolicy,
) -> Result<Schema, ExecError> {
    let mut tables = Vec::new();
    let mut without_rowid = Vec::new();
    {
        let mut stmt = conn.prepare(TABLES).map_err(catalog_error)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, bool>(1)?, row.get::<_, bool>(2)?))
            })
            .map_err(catalog_error)?;
        for row in rows {
            let (name, is_view, wr) = row.map_err(catalog_error)?;
            tables.push(Table {
                schema: SCHEMA.to_owned(),
                name,
                kind: if is_view { TableKind::View } else { TableKind::Table },
                comment: None,
                columns: Vec::new(),
                primary_key: Vec::new(),
                foreign_keys: Vec::new(),
                row_estimate: None,
            });
            without_rowid.push(wr);
        }
    }
    let names: Vec<String> = tables.iter().map(|t| t.name.clone()).collect();

    let CatalogRows { rows: columns, broken } = catalog_rows(conn, COLUMNS, &names, |row| {
        Ok(ColumnRow {
            name: row.get(1)?,
            declared: row.get::<_, Option<String>>(2)?.unwrap_or_default(),
            not_null: row.get(3)?,
            default: row.get(4)?,
            pk: row.get(5)?,
        })
    })?;
    let mut by_table: HashMap<String, Vec<ColumnRow>> = HashMap::new();
    for (table, column) in columns {
        by_table.entry(table).or_default().push(column);
    }
    for (table, wr) in tables.iter_mut().zip(&without_rowid) {
        fill_columns(table, by_table.remove(&table.name).unwrap_or_default(), *wr);
    }

    let CatalogRows { rows: fk_rows, .. } = catalog_rows(conn, FOREIGN_KEYS, &names, |row| {
        Ok(ForeignKeyRow {
            id: row.get(1)?,
            table: row.get(2)?,
            from: row.get(3)?,
            to: row.get(4)?,
        })
    })?;
    let foreign_keys = resolve_foreign_keys(&tables, fk_rows);
    for table in &mut tables {
        if let Some(fks) = foreign_keys.get(&table.name) {
            table.foreign_keys.clone_from(fks);
        }
    }

    let estimates = row_estimates(conn)?;
    for table in tables.iter_mut().filter(|t| t.kind == TableKind::Table) {
        table.row_estimate = estimates.get(&table.name).copied();
    }

    // A table SQLite cannot describe (a view over a dropped table, a virtual
    // table whose module is missing) cannot be queried either.
    tables.retain(|t| !broken.contains(&t.name));

    tables.retain(|t| policy.allows_table(Dialect::Sqlite, SCHEMA, &t.name));
    for table in &mut tables {
        table.foreign_keys.retain(|fk| {
            policy.allows_table(Dialect::Sqlite, &fk.referenced_schema, &fk.referenced_table)
        });
    }

    if options.sample_values > 0 {
        sample_values(conn, &mut tables, options.sample_values, policy);
    }
    Ok(Schema { dialect: Dialect::Sqlite, tables })
}

/// Rows of a catalog query, each with its table's name, and the tables it failed on.
struct CatalogRows<T> {
    rows: Vec<(String, T)>,
    broken: Vec<String>,
}

/// Runs a catalog query for all tables at once; when one broken table makes it
/// fail, runs it per table and reports the tables that failed.
fn catalog_rows<T>(
    conn: &Connection,
    sql: &str,
    names: &[String],
    read: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<CatalogRows<T>, ExecError> {
    let query = |table: Option<&str>| -> rusqlite::Result<Vec<(String, T)>> {
        let mut stmt = conn.prepare(sql)?;
        stmt.query_map([table], |row| Ok((row.get(0)?, read(row)?)))?.collect()
    };
    let whole = match query(None) {
        Ok(rows) => return Ok(CatalogRows { rows, broken: Vec::new() }),
        Err(e) => e,
    };
    tracing::debug!(error = %whole, "a catalog query failed; describing tables one by one");
    let mut rows = Vec::new();
    let mut broken = Vec::new();
    for name in names {
        match query(Some(name)) {
            Ok(mut r) => rows.append(&mut r),
            Err(e) => {
                tracing::warn!(table = %name, error = %e, "leaving out a table SQLite cannot describe");
                broken.push(name.clone());
            }
        }
    }
    // When nothing can be described, the database is the problem, not a table.
    if !names.is_empty() && broken.len() == names.len() {
        return Err(catalog_error(whole));
    }
    Ok(CatalogRows { rows, broken })
}

/// Sets a table's columns and primary key from its `pragma_table_xinfo` rows.
fn fill_columns(table: &mut Table, rows: Vec<ColumnRow>, without_rowid: bool) {
    let mut key: Vec<(i64, &ColumnRow)> =
        rows.iter().filter(|c| c.pk > 0).map(|c| (c.pk, c)).collect();
    key.sort_by_key(|(order, _)| *order);
    // SQLite lets primary-key columns hold NULL unless the key is the rowid
    // (`INTEGER PRIMARY KEY`) or the table is `WITHOUT ROWID`.
    let rowid_alias = key.len() == 1 && key[0].1.declared.eq_ignore_ascii_case("integer");
    let key_never_null = without_rowid || rowid_alias;
    table.primary_key = key.iter().map(|(_, c)| c.name.clone()).collect();
    table.columns = rows
        .into_iter()
        .map(|c| Column {
            nullable: !(c.not_null || (c.pk > 0 && key_never_null)),
            name: c.name,
            data_type: c.declared,
            default: c.default,
            comment: None,
            sample_values: Vec::new(),
        })
        .collect();
}

/// Groups foreign-key rows into [`ForeignKey`]s per table, naming referenced
/// tables as the catalog spells them and filling implicit primary-key references.
fn resolve_foreign_keys(
    tables: &[Table],
    rows: Vec<(String, ForeignKeyRow)>,
) -> HashMap<String, Vec<ForeignKey>> {
    // SQLite matches names case-insensitively, so `REFERENCES Customers` may name `customers`.
    let find = |name: &str| {
        tables
            .iter()
            .find(|t| t.name == name)
            .or_else(|| tables.iter().find(|t| t.name.eq_ignore_ascii_case(name)))
    };
    let mut grouped: Vec<(String, i64, Vec<ForeignKeyRow>)> = Vec::new();
    for (table, row) in rows {
        match grouped.last_mut() {
            Some((t, id, pairs)) if *t == table && *id == row.id => pairs.push(row),
            _ => grouped.push((table, row.id, vec![row])),
        }
    }
    let mut out: HashMap<String, Vec<ForeignKey>> = HashMap::new();
    for (table, _, pairs) in grouped {
        let parent = find(&pairs[0].table);
        let referenced_table = parent.map_or_else(|| pairs[0].table.clone(), |p| p.name.clone());
        let referenced_columns: Option<Vec<String>> = pairs
            .iter()
            .enumerate()
            .map(|(i, pair)| match &pair.to {
                Some(to) => Some(to.clone()),
                None => parent.and_then(|p| p.primary_key.get(i).cloned()),
            })
            .collect();
        let Some(referenced_columns) = referenced_columns else {
            tracing::warn!(
                table = %table,
                referenced_table = %referenced_table,
                "leaving out a foreign key to a table without a matching primary key"
            );
            continue;
        };
        out.entry(table).or_default().push(ForeignKey {
            columns: pairs.into_iter().map(|p| p.from).collect(),
            referenced_schema: SCHEMA.to_owned(),
            referenced_table,
            referenced_columns,
        });
    }
    out
}

/// Row counts recorded by `ANALYZE`, when it ever ran.
fn row_estimates(conn: &Connection) -> Result<HashMap<String, i64>, ExecError> {
    let analysed: bool = conn.query_row(HAS_STAT1, [], |row| row.get(0)).map_err(catalog_error)?;
    if !analysed {
        return Ok(HashMap::new());
    }
    let mut stmt = conn.prepare(ROW_ESTIMATES).map_err(catalog_error)?;
    let rows = stmt
        .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, Option<i64>>(1)?)))
        .map_err(catalog_error)?;
    let mut out = HashMap::new();
    for row in rows {
        if let (name, Some(estimate)) = row.map_err(catalog_error)? {
            out.insert(name, estimate);
        }
    }
    Ok(out)
}

/// Fills the most frequent values of text columns of tables (not views, whose
/// cost is unknown), up to [`MAX_SAMPLED_COLUMNS`] columns in table order.
fn sample_values(
    conn: &Connection,
    tables: &mut [Table],
    per_column: usize,
    policy: &AccessPolicy,
) {
    let limit = i64::try_from(per_column).unwrap_or(i64::MAX);
    let mut budget = MAX_SAMPLED_COLUMNS;
    for table in tables.iter_mut().filter(|t| t.kind == TableKind::Table) {
        for column in &mut table.columns {
            if budget == 0 {
                return;
            }
            if !has_text_affinity(&column.data_type)
                || policy.is_masked(Dialect::Sqlite, SCHEMA, &table.name, &column.name)
            {
                continue;
            }
            budget -= 1;
            let sql = format!(
                "SELECT v FROM (SELECT CAST({col} AS TEXT) AS v FROM main.{table} LIMIT {SAMPLE_SCAN_ROWS}) \
                 WHERE length(v) BETWEEN 1 AND {MAX_SAMPLE_CHARS} \
                 GROUP BY v ORDER BY count(*) DESC, v LIMIT ?1",
                col = quote(&column.name),
                table = quote(&table.name),
            );
            let sampled = conn.prepare(&sql).and_then(|mut stmt| {
                stmt.query_map([limit], |row| {
                    Ok(match row.get_ref(0)? {
                        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                        other => format!("{other:?}"),
                    })
                })?
                .collect::<rusqlite::Result<Vec<String>>>()
            });
            match sampled {
                Ok(values) => column.sample_values = values,
                Err(e) => tracing::warn!(
                    table = %table.name,
                    column = %column.name,
                    error = %e,
                    "could not sample column values"
                ),
            }
        }
    }
}

/// Whether SQLite gives a column of this declared type TEXT affinity.
fn has_text_affinity(declared: &str) -> bool {
    let t = declared.to_ascii_uppercase();
    // INTEGER affinity wins over TEXT: `CHARINT` is an integer column.
    !t.contains("INT") && (t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT"))
}

/// `name` as a quoted SQLite identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn catalog_error(e: rusqlite::Error) -> ExecError {
    let mut err = query_error(e, Duration::ZERO);
    err.message = format!("cannot read the SQLite catalog: {}", err.message);
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_affinity() {
        let cases = [
            ("TEXT", true),
            ("varchar(20)", true),
            ("CHARACTER VARYING", true),
            ("NATIVE CHARACTER(70)", true),
            ("CLOB", true),
            ("Text", true),
            ("CHARINT", false),
            ("INTEGER", false),
            ("", false),
            ("BLOB", false),
            ("REAL", false),
            ("NUMERIC", false),
            ("DATETIME", false),
        ];
        for (declared, expected) in cases {
            assert_eq!(has_text_affinity(declared), expected, "{declared}");
        }
    }

    #[test]
    fn quoting() {
        let cases = [("a", r#""a""#), ("two words", r#""two words""#), (r#"x"y"#, r#""x""y""#)];
        for (name, expected) in cases {
            assert_eq!(quote(name), expected);
        }
    }
}
