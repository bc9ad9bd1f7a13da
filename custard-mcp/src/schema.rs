//! `get_schema`: the tables and columns an assistant needs, within a size
//! budget, found by the same retrieval questions use.

use custard_core::{DdlOptions, RetrieveOptions, Schema, SchemaIndex, Table, estimate_tokens};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{ToolError, VALIDATION_ERROR};

/// The most tokens (about four characters each) of schema one call returns.
pub const SCHEMA_TOKENS: usize = 8000;
/// The most tables one call lists, however small.
const MAX_TABLES: usize = 60;
/// The longest `search` accepted, in characters.
pub const MAX_SEARCH_CHARS: usize = 1000;

/// What `get_schema` returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SchemaResult {
    /// The SQL dialect to write: `postgres` or `sqlite`.
    pub dialect: String,
    /// The tables listed, the most relevant to `search` first when the
    /// whole schema does not fit.
    pub tables: Vec<TableInfo>,
    /// Tables and views in the whole schema.
    pub total_tables: usize,
    /// Whether every table, with every column, is listed; when not, call
    /// again with a `search` naming what the question is about.
    pub complete: bool,
}

/// A table or view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TableInfo {
    /// The name to write in SQL (`schema.name` outside the default schema).
    pub name: String,
    /// `table`, `view`, `materialized_view` or `foreign_table`.
    pub kind: String,
    /// The catalog comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The planner's row estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_estimate: Option<i64>,
    /// The primary key's columns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub primary_key: Vec<String>,
    /// Foreign keys to other tables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub foreign_keys: Vec<ForeignKeyInfo>,
    /// The columns listed (all of them when `complete`).
    pub columns: Vec<ColumnInfo>,
}

/// A foreign key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ForeignKeyInfo {
    /// Columns of this table.
    pub columns: Vec<String>,
    /// The table referenced, named as in SQL.
    pub references: String,
    /// Its columns, in the same order.
    pub referenced_columns: Vec<String>,
}

/// A column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ColumnInfo {
    /// The column's name.
    pub name: String,
    /// The declared type.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Whether it accepts NULL.
    pub nullable: bool,
    /// The catalog comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Frequent values, as far as the agent's policy shares them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample_values: Vec<String>,
}

/// The schema `index` holds, whole when it fits [`SCHEMA_TOKENS`] (and no
/// search narrows it), else the tables and columns most relevant to `search`
/// that fit; and the text: those tables as compact DDL.
pub fn schema_result(
    index: &SchemaIndex,
    search: Option<&str>,
) -> Result<(SchemaResult, String), ToolError> {
    let search = search.map(str::trim).filter(|s| !s.is_empty());
    if search.is_some_and(|s| s.chars().count() > MAX_SEARCH_CHARS) {
        return Err(ToolError::new(
            VALIDATION_ERROR,
            format!("search must be at most {MAX_SEARCH_CHARS} characters"),
        ));
    }
    let whole = index.schema();
    let ddl_options = DdlOptions::default();
    let whole_ddl = whole.to_ddl(&ddl_options);
    let (shown, ddl) = if estimate_tokens(&whole_ddl) <= SCHEMA_TOKENS {
        (whole.clone(), whole_ddl)
    } else {
        let options = RetrieveOptions {
            token_budget: SCHEMA_TOKENS,
            max_tables: MAX_TABLES,
            ddl: ddl_options,
            ..RetrieveOptions::default()
        };
        let found = index.retrieve(search.unwrap_or(""), &options);
        (found.schema, found.ddl)
    };
    let complete = shown.tables.len() == whole.tables.len()
        && shown.tables.iter().all(|t| {
            whole.table(&t.schema, &t.name).is_some_and(|w| w.columns.len() == t.columns.len())
        });
    let mut text = String::new();
    if !complete {
        text.push_str(&format!(
            "-- {} of {} tables, the most relevant to {}; call again with a search naming what \
             you need for others.\n",
            shown.tables.len(),
            whole.tables.len(),
            search.map_or_else(|| "the schema's core".to_owned(), |s| format!("\"{s}\"")),
        ));
    }
    text.push_str(&ddl);
    let result = SchemaResult {
        dialect: whole.dialect.as_str().to_owned(),
        tables: shown.tables.iter().map(|t| table_info(&shown, t)).collect(),
        total_tables: whole.tables.len(),
        complete,
    };
    Ok((result, text))
}

fn table_info(schema: &Schema, table: &Table) -> TableInfo {
    let dialect = schema.dialect;
    let referenced = |fk_schema: &str, fk_table: &str| {
        if fk_schema == dialect.default_schema() {
            fk_table.to_owned()
        } else {
            format!("{fk_schema}.{fk_table}")
        }
    };
    TableInfo {
        name: table.display_name(dialect),
        kind: table.kind.as_str().to_owned(),
        comment: table.comment.clone(),
        row_estimate: table.row_estimate,
        primary_key: table.primary_key.clone(),
        foreign_keys: table
            .foreign_keys
            .iter()
            .map(|fk| ForeignKeyInfo {
                columns: fk.columns.clone(),
                references: referenced(&fk.referenced_schema, &fk.referenced_table),
                referenced_columns: fk.referenced_columns.clone(),
            })
            .collect(),
        columns: table
            .columns
            .iter()
            .map(|c| ColumnInfo {
                name: c.name.clone(),
                type_name: c.data_type.clone(),
                nullable: c.nullable,
                comment: c.comment.clone(),
                sample_values: c.sample_values.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use custard_core::{Column, Dialect};

    use super::*;

    fn wide_schema(tables: usize) -> Schema {
        let mut schema = Schema::new(Dialect::Postgres);
        for i in 0..tables {
            let columns =
                (0..30).map(|c| Column::new(format!("attribute_{c}_of_{i}"), "text")).collect();
            schema.tables.push(Table::new("public", format!("table_{i}"), columns));
        }
        schema.tables.push(Table::new(
            "sales",
            "invoices",
            vec![Column::new("invoice_total", "numeric"), Column::new("customer_name", "text")],
        ));
        schema
    }

    #[test]
    fn a_small_schema_comes_whole() {
        let index = SchemaIndex::new(wide_schema(2));
        let (result, text) = schema_result(&index, Some("invoices")).expect("ok");
        assert!(result.complete);
        assert_eq!(result.total_tables, 3);
        assert_eq!(result.tables.len(), 3);
        assert_eq!(result.tables[2].name, "sales.invoices");
        assert!(text.contains("invoice_total"), "{text}");
    }

    #[test]
    fn a_big_schema_is_searched_within_the_budget() {
        let index = SchemaIndex::new(wide_schema(200));
        let (result, text) = schema_result(&index, Some("invoice totals by customer")).expect("ok");
        assert!(!result.complete);
        assert_eq!(result.total_tables, 201);
        assert_eq!(result.tables[0].name, "sales.invoices");
        assert!(estimate_tokens(&text) <= SCHEMA_TOKENS + 100, "{}", estimate_tokens(&text));
        assert!(text.starts_with("-- "), "{text}");
        let err = schema_result(&index, Some(&"x".repeat(MAX_SEARCH_CHARS + 1))).expect_err("long");
        assert_eq!(err.code, VALIDATION_ERROR);
    }
}
