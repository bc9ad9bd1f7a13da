//! Compact DDL for prompts: one line per column, comments kept, keys inline.

use std::fmt::Write;

use super::{Schema, Table, TableKind};
use crate::Dialect;

/// What [`Schema::to_ddl`] includes besides names and types.
#[derive(Clone, Debug)]
pub struct DdlOptions {
    /// Include table and column comments.
    pub comments: bool,
    /// Include up to this many sample values per column (0 for none).
    pub sample_values: usize,
    /// Include the planner's row estimate per table.
    pub row_estimates: bool,
}

impl Default for DdlOptions {
    fn default() -> Self {
        DdlOptions { comments: true, sample_values: 3, row_estimates: true }
    }
}

/// Renders `tables` of `schema` as `CREATE TABLE` statements, one column a line.
pub(crate) fn render<'a>(
    schema: &Schema,
    tables: impl Iterator<Item = &'a Table>,
    options: &DdlOptions,
) -> String {
    let mut out = String::new();
    for table in tables {
        if !out.is_empty() {
            out.push('\n');
        }
        render_table(&mut out, schema.dialect, table, options);
    }
    out
}

fn render_table(out: &mut String, dialect: Dialect, table: &Table, options: &DdlOptions) {
    let name = qualified(dialect, &table.schema, &table.name);
    let keyword = match table.kind {
        TableKind::Table => "TABLE",
        TableKind::View => "VIEW",
        TableKind::MaterializedView => "MATERIALIZED VIEW",
        TableKind::Foreign => "FOREIGN TABLE",
    };
    let mut header_notes = Vec::new();
    if let Some(c) = table.comment.as_deref().filter(|c| options.comments && !c.is_empty()) {
        header_notes.push(one_line(c));
    }
    if let Some(n) = table.row_estimate.filter(|n| options.row_estimates && *n >= 0) {
        header_notes.push(format!("~{n} rows"));
    }
    if !header_notes.is_empty() {
        let _ = writeln!(out, "-- {}", header_notes.join("; "));
    }
    let _ = writeln!(out, "CREATE {keyword} {name} (");
    let single_pk = match table.primary_key.as_slice() {
        [one] => Some(one.as_str()),
        _ => None,
    };
    let mut lines: Vec<(String, Option<String>)> = Vec::new();
    for col in &table.columns {
        let mut line = format!("  {} {}", ident(dialect, &col.name), col.data_type);
        if single_pk == Some(col.name.as_str()) {
            line.push_str(" PRIMARY KEY");
        } else if !col.nullable {
            line.push_str(" NOT NULL");
        }
        if let Some(fk) =
            table.foreign_keys.iter().find(|fk| fk.columns.len() == 1 && fk.columns[0] == col.name)
        {
            let _ = write!(
                line,
                " REFERENCES {}({})",
                qualified(dialect, &fk.referenced_schema, &fk.referenced_table),
                ident(dialect, &fk.referenced_columns[0])
            );
        }
        let mut notes = Vec::new();
        if let Some(c) = col.comment.as_deref().filter(|c| options.comments && !c.is_empty()) {
            notes.push(one_line(c));
        }
        if options.sample_values > 0 && !col.sample_values.is_empty() {
            let samples: Vec<String> = col
                .sample_values
                .iter()
                .take(options.sample_values)
                .map(|v| format!("'{}'", one_line(v).replace('\'', "''")))
                .collect();
            notes.push(format!("e.g. {}", samples.join(", ")));
        }
        lines.push((line, (!notes.is_empty()).then(|| notes.join("; "))));
    }
    if table.primary_key.len() > 1 {
        let cols: Vec<String> = table.primary_key.iter().map(|c| ident(dialect, c)).collect();
        lines.push((format!("  PRIMARY KEY ({})", cols.join(", ")), None));
    }
    for fk in table.foreign_keys.iter().filter(|fk| fk.columns.len() > 1) {
        let cols: Vec<String> = fk.columns.iter().map(|c| ident(dialect, c)).collect();
        let refs: Vec<String> = fk.referenced_columns.iter().map(|c| ident(dialect, c)).collect();
        lines.push((
            format!(
                "  FOREIGN KEY ({}) REFERENCES {}({})",
                cols.join(", "),
                qualified(dialect, &fk.referenced_schema, &fk.referenced_table),
                refs.join(", ")
            ),
            None,
        ));
    }
    let last = lines.len().saturating_sub(1);
    for (i, (line, note)) in lines.into_iter().enumerate() {
        out.push_str(&line);
        if i != last {
            out.push(',');
        }
        if let Some(note) = note {
            let _ = write!(out, " -- {note}");
        }
        out.push('\n');
    }
    out.push_str(");\n");
}

fn qualified(dialect: Dialect, schema: &str, name: &str) -> String {
    if schema == dialect.default_schema() {
        ident(dialect, name)
    } else {
        format!("{}.{}", ident(dialect, schema), ident(dialect, name))
    }
}

/// Quotes an identifier only when the dialect would not read it back as written.
pub(crate) fn ident(dialect: Dialect, name: &str) -> String {
    let plain = !name.is_empty()
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !is_reserved(name);
    let plain = plain || (dialect == Dialect::Sqlite && is_plain_sqlite(name));
    if plain { name.to_owned() } else { format!("\"{}\"", name.replace('"', "\"\"")) }
}

fn is_plain_sqlite(name: &str) -> bool {
    // SQLite folds nothing but matches case-insensitively, so mixed case reads back fine.
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !is_reserved(&name.to_ascii_lowercase())
}

fn is_reserved(word: &str) -> bool {
    // The words a column is most often named after that SQL reserves.
    const RESERVED: &[&str] = &[
        "all",
        "and",
        "any",
        "array",
        "as",
        "asc",
        "both",
        "case",
        "cast",
        "check",
        "collate",
        "column",
        "constraint",
        "create",
        "current_date",
        "current_time",
        "current_timestamp",
        "current_user",
        "default",
        "desc",
        "distinct",
        "do",
        "else",
        "end",
        "except",
        "false",
        "fetch",
        "for",
        "foreign",
        "from",
        "grant",
        "group",
        "having",
        "in",
        "into",
        "is",
        "join",
        "leading",
        "limit",
        "not",
        "null",
        "offset",
        "on",
        "only",
        "or",
        "order",
        "primary",
        "references",
        "select",
        "table",
        "then",
        "to",
        "trailing",
        "true",
        "union",
        "unique",
        "user",
        "using",
        "when",
        "where",
        "window",
        "with",
    ];
    RESERVED.contains(&word)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
