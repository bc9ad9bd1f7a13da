//! The database model shared by discovery, retrieval, prompts and the guard.

mod ddl;

use sha2::{Digest, Sha256};

use crate::Dialect;

pub use ddl::DdlOptions;
pub(crate) use ddl::ident as ddl_ident;

/// Everything Custard knows about one database: its tables and views.
#[derive(Clone, Debug, PartialEq)]
pub struct Schema {
    /// The dialect of the database this schema was read from.
    pub dialect: Dialect,
    /// Tables and views, ordered by schema then name.
    pub tables: Vec<Table>,
}

/// What kind of relation a [`Table`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TableKind {
    /// An ordinary (or partitioned) table.
    Table,
    /// A view.
    View,
    /// A materialized view.
    MaterializedView,
    /// A foreign table.
    Foreign,
}

impl TableKind {
    /// The lowercase name used on the wire and in DDL comments.
    pub fn as_str(self) -> &'static str {
        match self {
            TableKind::Table => "table",
            TableKind::View => "view",
            TableKind::MaterializedView => "materialized_view",
            TableKind::Foreign => "foreign_table",
        }
    }

    /// Parses the name produced by [`TableKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "table" => TableKind::Table,
            "view" => TableKind::View,
            "materialized_view" => TableKind::MaterializedView,
            "foreign_table" => TableKind::Foreign,
            _ => return None,
        })
    }
}

/// One table or view.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// The schema (namespace) holding the table: `public`, `sales`, or `main` in SQLite.
    pub schema: String,
    /// The table's name as stored in the catalog.
    pub name: String,
    /// Table, view, materialized view or foreign table.
    pub kind: TableKind,
    /// The catalog comment, if any.
    pub comment: Option<String>,
    /// Columns in their ordinal order.
    pub columns: Vec<Column>,
    /// Names of the primary-key columns, in key order (empty when there is none).
    pub primary_key: Vec<String>,
    /// Foreign keys from this table to others.
    pub foreign_keys: Vec<ForeignKey>,
    /// The planner's row estimate, when the database keeps one.
    pub row_estimate: Option<i64>,
}

/// One column of a [`Table`].
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    /// The column's name as stored in the catalog.
    pub name: String,
    /// The declared type, as the database prints it (`integer`, `character varying(20)`).
    pub data_type: String,
    /// Whether the column accepts NULL.
    pub nullable: bool,
    /// The default expression, if any.
    pub default: Option<String>,
    /// The catalog comment, if any.
    pub comment: Option<String>,
    /// A few frequent values of a text column, to help match words in questions.
    pub sample_values: Vec<String>,
}

impl Column {
    /// A nullable column with no default, comment or samples.
    pub fn new(name: impl Into<String>, data_type: impl Into<String>) -> Self {
        Column {
            name: name.into(),
            data_type: data_type.into(),
            nullable: true,
            default: None,
            comment: None,
            sample_values: Vec::new(),
        }
    }
}

/// A foreign key: `columns` of the owning table reference `referenced_columns`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignKey {
    /// Columns of the owning table.
    pub columns: Vec<String>,
    /// Schema of the referenced table.
    pub referenced_schema: String,
    /// Name of the referenced table.
    pub referenced_table: String,
    /// Referenced columns, in the same order as `columns`.
    pub referenced_columns: Vec<String>,
}

impl Schema {
    /// An empty schema of the given dialect.
    pub fn new(dialect: Dialect) -> Self {
        Schema { dialect, tables: Vec::new() }
    }

    /// Finds a table by schema and name, matching names exactly.
    pub fn table(&self, schema: &str, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.schema == schema && t.name == name)
    }

    /// A stable fingerprint of the schema's structure (names, types, keys,
    /// comments), as 64 hex digits.
    ///
    /// Row estimates and sample values are left out: they change with the data,
    /// not with the schema, and must not make agents resend it.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |s: &str| {
            // Length-prefixed so that ("ab","c") and ("a","bc") differ.
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        };
        field(self.dialect.as_str());
        let mut tables: Vec<&Table> = self.tables.iter().collect();
        tables.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
        for t in tables {
            field("table");
            field(&t.schema);
            field(&t.name);
            field(t.kind.as_str());
            field(t.comment.as_deref().unwrap_or(""));
            for c in &t.columns {
                field("column");
                field(&c.name);
                field(&c.data_type);
                field(if c.nullable { "null" } else { "not null" });
                field(c.default.as_deref().unwrap_or(""));
                field(c.comment.as_deref().unwrap_or(""));
            }
            field("pk");
            t.primary_key.iter().for_each(|c| field(c));
            for fk in &t.foreign_keys {
                field("fk");
                fk.columns.iter().for_each(|c| field(c));
                field(&fk.referenced_schema);
                field(&fk.referenced_table);
                fk.referenced_columns.iter().for_each(|c| field(c));
            }
        }
        hex::encode(h.finalize())
    }

    /// Renders every table as compact DDL for a prompt; see [`DdlOptions`].
    pub fn to_ddl(&self, options: &DdlOptions) -> String {
        ddl::render(self, self.tables.iter(), options)
    }
}

impl Table {
    /// A plain table with `columns` and nothing else (no keys, comment or estimate).
    ///
    /// ```
    /// use custard_core::{Column, Table};
    /// let t = Table::new("public", "orders", vec![Column::new("id", "integer")]);
    /// assert_eq!(t.column("id").map(|c| c.data_type.as_str()), Some("integer"));
    /// ```
    pub fn new(schema: impl Into<String>, name: impl Into<String>, columns: Vec<Column>) -> Self {
        Table {
            schema: schema.into(),
            name: name.into(),
            kind: TableKind::Table,
            comment: None,
            columns,
            primary_key: Vec::new(),
            foreign_keys: Vec::new(),
            row_estimate: None,
        }
    }

    /// `schema.name`, or just `name` when the schema is the dialect's default.
    pub fn display_name(&self, dialect: Dialect) -> String {
        if self.schema == dialect.default_schema() {
            self.name.clone()
        } else {
            format!("{}.{}", self.schema, self.name)
        }
    }

    /// Finds a column by exact name.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}
