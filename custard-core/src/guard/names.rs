//! Looking up tables and columns of a known [`Schema`] the way the dialect
//! resolves names, and suggesting close real names for unknown ones.

use std::collections::HashMap;

use sqlparser::ast::Ident;

use crate::schema::ddl_ident;
use crate::{Dialect, Schema, Table};

/// How the dialect reads an identifier: PostgreSQL folds unquoted names to
/// lower case; SQLite compares every name case-insensitively.
pub(super) fn fold(dialect: Dialect, ident: &Ident) -> String {
    match dialect {
        Dialect::Postgres if ident.quote_style.is_some() => ident.value.clone(),
        _ => ident.value.to_lowercase(),
    }
}

/// A catalog name in the same form as [`fold`] produces for a matching identifier.
pub(super) fn catalog_key(dialect: Dialect, name: &str) -> String {
    match dialect {
        Dialect::Postgres => name.to_owned(),
        _ => name.to_lowercase(),
    }
}

/// Tables and columns of a schema, keyed for name resolution.
#[derive(Debug)]
pub(crate) struct NameIndex {
    schema: Schema,
    tables: HashMap<(String, String), usize>,
    by_name: HashMap<String, Vec<usize>>,
}

impl NameIndex {
    pub(crate) fn new(schema: &Schema) -> Self {
        let d = schema.dialect;
        let mut tables = HashMap::new();
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, t) in schema.tables.iter().enumerate() {
            tables.insert((catalog_key(d, &t.schema), catalog_key(d, &t.name)), i);
            by_name.entry(catalog_key(d, &t.name)).or_default().push(i);
        }
        NameIndex { schema: schema.clone(), tables, by_name }
    }

    /// The table `schema.name` (both already folded).
    pub(super) fn table(&self, schema: &str, name: &str) -> Option<TableId> {
        self.tables.get(&(schema.to_owned(), name.to_owned())).copied().map(TableId)
    }

    /// The first table called `name` along the search path.
    pub(super) fn resolve_unqualified(
        &self,
        search_path: &[String],
        name: &str,
    ) -> Option<TableId> {
        let candidates = self.by_name.get(name)?;
        search_path.iter().find_map(|s| {
            let s = catalog_key(self.schema.dialect, s);
            candidates
                .iter()
                .find(|&&i| catalog_key(self.schema.dialect, &self.schema.tables[i].schema) == s)
                .map(|&i| TableId(i))
        })
    }

    /// Every table named `name` in any schema (for "did you mean sales.orders").
    pub(super) fn tables_named(&self, name: &str) -> Vec<TableId> {
        self.by_name.get(name).map(|v| v.iter().map(|&i| TableId(i)).collect()).unwrap_or_default()
    }

    pub(super) fn get(&self, id: TableId) -> &Table {
        &self.schema.tables[id.0]
    }

    /// How to write a table so that this dialect reads it back.
    pub(super) fn display(&self, id: TableId) -> String {
        let t = self.get(id);
        let d = self.schema.dialect;
        if t.schema == d.default_schema() {
            ddl_ident(d, &t.name)
        } else {
            format!("{}.{}", ddl_ident(d, &t.schema), ddl_ident(d, &t.name))
        }
    }

    /// Up to three table names that look like `wanted`.
    pub(super) fn suggest_tables(&self, wanted: &str) -> Vec<String> {
        let ids = (0..self.schema.tables.len()).map(TableId);
        closest(wanted, ids.map(|id| (self.get(id).name.clone(), self.display(id))))
    }

    /// Up to three columns of `tables` that look like `wanted`.
    pub(super) fn suggest_columns(&self, tables: &[TableId], wanted: &str) -> Vec<String> {
        let d = self.schema.dialect;
        let candidates = tables.iter().flat_map(|&id| {
            let t = self.get(id);
            let qualifier = if tables.len() > 1 {
                format!("{}.", ddl_ident(d, &t.name))
            } else {
                String::new()
            };
            t.columns
                .iter()
                .map(move |c| (c.name.clone(), format!("{qualifier}{}", ddl_ident(d, &c.name))))
        });
        closest(wanted, candidates)
    }
}

/// Picks the three candidates closest to `wanted`, by name similarity.
pub(super) fn closest(
    wanted: &str,
    candidates: impl Iterator<Item = (String, String)>,
) -> Vec<String> {
    let wanted = wanted.to_lowercase();
    let mut scored: Vec<(f64, String)> = candidates
        .map(|(name, shown)| {
            let name = name.to_lowercase();
            let mut score = strsim::jaro_winkler(&wanted, &name);
            if name.contains(&wanted) || wanted.contains(&name) {
                score = score.max(0.85);
            }
            (score, shown)
        })
        .filter(|(score, _)| *score >= 0.75)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(3).map(|(_, shown)| shown).collect()
}

/// A table of the indexed schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct TableId(usize);
