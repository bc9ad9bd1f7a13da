//! The schema as it travels from agent to server, and its conversions.

use serde::{Deserialize, Serialize};

use super::{WireError, parse_dialect, parse_object, shorten};
use crate::{Column, ForeignKey, Schema, Table, TableKind};

/// A [`Schema`] on the wire: the same content, spelled as JSON-friendly strings.
///
/// Convert with `WireSchema::from(&schema)` and `Schema::try_from(wire)`; empty
/// lists and absent values are left out of the JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireSchema {
    /// The dialect: `postgres` or `sqlite`.
    pub dialect: String,
    /// Tables and views, ordered by schema then name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<WireTable>,
}

/// A [`Table`] on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireTable {
    /// The schema (namespace) holding the table.
    pub schema: String,
    /// The table's name.
    pub name: String,
    /// `table`, `view`, `materialized_view` or `foreign_table` (see [`TableKind::as_str`]).
    pub kind: String,
    /// The catalog comment, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Columns in their ordinal order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<WireColumn>,
    /// Names of the primary-key columns, in key order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub primary_key: Vec<String>,
    /// Foreign keys from this table to others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub foreign_keys: Vec<WireForeignKey>,
    /// The planner's row estimate, when the database keeps one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_estimate: Option<i64>,
}

/// A [`Column`] on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireColumn {
    /// The column's name.
    pub name: String,
    /// The declared type, as the database prints it.
    pub data_type: String,
    /// Whether the column accepts NULL.
    pub nullable: bool,
    /// The default expression, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// The catalog comment, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// A few frequent values of a text column.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample_values: Vec<String>,
}

/// A [`ForeignKey`] on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireForeignKey {
    /// Columns of the owning table.
    pub columns: Vec<String>,
    /// Schema of the referenced table.
    pub referenced_schema: String,
    /// Name of the referenced table.
    pub referenced_table: String,
    /// Referenced columns, in the same order as `columns`.
    pub referenced_columns: Vec<String>,
}

impl WireSchema {
    /// Compact JSON, as the agent sends it.
    pub fn to_json(&self) -> String {
        to_json(self, false)
    }

    /// Indented JSON, for people (the agent's `discover` command prints it).
    pub fn to_json_pretty(&self) -> String {
        to_json(self, true)
    }

    /// Parses the JSON produced by [`WireSchema::to_json`] (or its pretty form).
    pub fn from_json(text: &str) -> Result<WireSchema, WireError> {
        parse_object(text)
            .map_err(|err| WireError::InvalidSchema(shorten(format!("not a schema JSON: {err}"))))
    }
}

/// A schema as JSON, exactly as the agent sends it in a `schema` frame.
///
/// ```
/// use custard_core::wire::{schema_from_json, schema_to_json};
/// use custard_core::{Dialect, Schema};
///
/// let schema = Schema::new(Dialect::Postgres);
/// let json = schema_to_json(&schema);
/// assert_eq!(json, r#"{"dialect":"postgres"}"#);
/// assert_eq!(schema_from_json(&json)?, schema);
/// # Ok::<(), custard_core::wire::WireError>(())
/// ```
pub fn schema_to_json(schema: &Schema) -> String {
    WireSchema::from(schema).to_json()
}

/// Reads a schema from the JSON of [`schema_to_json`].
pub fn schema_from_json(text: &str) -> Result<Schema, WireError> {
    Schema::try_from(WireSchema::from_json(text)?)
}

fn to_json(schema: &WireSchema, pretty: bool) -> String {
    let result =
        if pretty { serde_json::to_string_pretty(schema) } else { serde_json::to_string(schema) };
    // Unreachable: a `WireSchema` holds only strings, numbers, booleans and lists,
    // which always serialize. Still, never panic here.
    result
        .unwrap_or_else(|err| format!("{{\"error\":{}}}", serde_json::Value::from(err.to_string())))
}

impl From<&Schema> for WireSchema {
    fn from(schema: &Schema) -> Self {
        WireSchema {
            dialect: schema.dialect.as_str().to_owned(),
            tables: schema.tables.iter().map(WireTable::from).collect(),
        }
    }
}

impl From<&Table> for WireTable {
    fn from(table: &Table) -> Self {
        WireTable {
            schema: table.schema.clone(),
            name: table.name.clone(),
            kind: table.kind.as_str().to_owned(),
            comment: table.comment.clone(),
            columns: table.columns.iter().map(WireColumn::from).collect(),
            primary_key: table.primary_key.clone(),
            foreign_keys: table.foreign_keys.iter().map(WireForeignKey::from).collect(),
            row_estimate: table.row_estimate,
        }
    }
}

impl From<&Column> for WireColumn {
    fn from(column: &Column) -> Self {
        WireColumn {
            name: column.name.clone(),
            data_type: column.data_type.clone(),
            nullable: column.nullable,
            default: column.default.clone(),
            comment: column.comment.clone(),
            sample_values: column.sample_values.clone(),
        }
    }
}

impl From<&ForeignKey> for WireForeignKey {
    fn from(fk: &ForeignKey) -> Self {
        WireForeignKey {
            columns: fk.columns.clone(),
            referenced_schema: fk.referenced_schema.clone(),
            referenced_table: fk.referenced_table.clone(),
            referenced_columns: fk.referenced_columns.clone(),
        }
    }
}

impl TryFrom<WireSchema> for Schema {
    type Error = WireError;

    /// Fails on a dialect or table kind this build does not know.
    fn try_from(wire: WireSchema) -> Result<Self, WireError> {
        let Some(dialect) = parse_dialect(&wire.dialect) else {
            return Err(WireError::InvalidSchema(shorten(format!(
                "unknown dialect `{}` (expected `postgres` or `sqlite`)",
                wire.dialect
            ))));
        };
        let tables = wire.tables.into_iter().map(Table::try_from).collect::<Result<_, _>>()?;
        Ok(Schema { dialect, tables })
    }
}

impl TryFrom<WireTable> for Table {
    type Error = WireError;

    /// Fails on a table kind this build does not know.
    fn try_from(wire: WireTable) -> Result<Self, WireError> {
        let Some(kind) = TableKind::parse(&wire.kind) else {
            return Err(WireError::InvalidSchema(shorten(format!(
                "table `{}.{}` has unknown kind `{}`",
                wire.schema, wire.name, wire.kind
            ))));
        };
        Ok(Table {
            schema: wire.schema,
            name: wire.name,
            kind,
            comment: wire.comment,
            columns: wire.columns.into_iter().map(Column::from).collect(),
            primary_key: wire.primary_key,
            foreign_keys: wire.foreign_keys.into_iter().map(ForeignKey::from).collect(),
            row_estimate: wire.row_estimate,
        })
    }
}

impl From<WireColumn> for Column {
    fn from(wire: WireColumn) -> Self {
        Column {
            name: wire.name,
            data_type: wire.data_type,
            nullable: wire.nullable,
            default: wire.default,
            comment: wire.comment,
            sample_values: wire.sample_values,
        }
    }
}

impl From<WireForeignKey> for ForeignKey {
    fn from(wire: WireForeignKey) -> Self {
        ForeignKey {
            columns: wire.columns,
            referenced_schema: wire.referenced_schema,
            referenced_table: wire.referenced_table,
            referenced_columns: wire.referenced_columns,
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::Dialect;
    use crate::wire::SchemaReport;

    fn column(name: &str, data_type: &str, nullable: bool) -> Column {
        Column {
            name: name.into(),
            data_type: data_type.into(),
            nullable,
            default: None,
            comment: None,
            sample_values: vec![],
        }
    }

    /// A schema that uses every field, optional or not.
    pub(in crate::wire) fn sample_schema() -> Schema {
        let customers = Table {
            schema: "public".into(),
            name: "customers".into(),
            kind: TableKind::Table,
            comment: Some("People who buy \"things\"; one row each.".into()),
            columns: vec![
                Column {
                    default: Some("nextval('customers_id_seq'::regclass)".into()),
                    ..column("id", "integer", false)
                },
                Column {
                    comment: Some("ISO country code".into()),
                    sample_values: vec!["FR".into(), "DE".into(), "Ünïcode 😀".into()],
                    ..column("country", "character varying(2)", true)
                },
            ],
            primary_key: vec!["id".into()],
            foreign_keys: vec![],
            row_estimate: Some(1_234_567),
        };
        let orders = Table {
            schema: "sales".into(),
            name: "orders".into(),
            kind: TableKind::Table,
            comment: None,
            columns: vec![
                column("order_id", "bigint", false),
                column("line", "integer", false),
                column("customer_id", "integer", true),
            ],
            primary_key: vec!["order_id".into(), "line".into()],
            foreign_keys: vec![ForeignKey {
                columns: vec!["customer_id".into()],
                referenced_schema: "public".into(),
                referenced_table: "customers".into(),
                referenced_columns: vec!["id".into()],
            }],
            row_estimate: Some(-1),
        };
        let views = [
            (TableKind::View, "v"),
            (TableKind::MaterializedView, "mv"),
            (TableKind::Foreign, "ft"),
        ]
        .map(|(kind, name)| Table {
            schema: "sales".into(),
            name: name.into(),
            kind,
            comment: None,
            columns: vec![column("n", "numeric(10,2)", true)],
            primary_key: vec![],
            foreign_keys: vec![],
            row_estimate: None,
        });
        let mut tables = vec![customers, orders];
        tables.extend(views);
        Schema { dialect: Dialect::Postgres, tables }
    }

    #[test]
    fn schema_round_trips_through_json() {
        let sqlite = Schema {
            dialect: Dialect::Sqlite,
            tables: vec![Table {
                schema: "main".into(),
                name: "t".into(),
                kind: TableKind::Table,
                comment: None,
                columns: vec![],
                primary_key: vec![],
                foreign_keys: vec![],
                row_estimate: None,
            }],
        };
        for schema in [sample_schema(), sqlite, Schema::new(Dialect::Postgres)] {
            let wire = WireSchema::from(&schema);
            for json in [wire.to_json(), wire.to_json_pretty()] {
                let back = WireSchema::from_json(&json).unwrap();
                assert_eq!(back, wire);
                let schema_back = Schema::try_from(back).unwrap();
                assert_eq!(schema_back, schema);
                assert_eq!(schema_back.fingerprint(), schema.fingerprint());
            }
            assert_eq!(schema_from_json(&schema_to_json(&schema)).unwrap(), schema);
            let report = SchemaReport::new(&schema);
            assert_eq!(report.fingerprint, schema.fingerprint());
            assert_eq!(report.into_schema().unwrap(), schema);
        }
    }

    #[test]
    fn schema_json_is_compact() {
        let check = |schema: &Schema, expected: &str| assert_eq!(schema_to_json(schema), expected);
        check(&Schema::new(Dialect::Sqlite), r#"{"dialect":"sqlite"}"#);
        let mut schema = Schema::new(Dialect::Postgres);
        schema.tables.push(Table {
            schema: "public".into(),
            name: "t".into(),
            kind: TableKind::View,
            comment: None,
            columns: vec![column("a", "text", true)],
            primary_key: vec![],
            foreign_keys: vec![],
            row_estimate: None,
        });
        check(
            &schema,
            r#"{"dialect":"postgres","tables":[{"schema":"public","name":"t","kind":"view","columns":[{"name":"a","data_type":"text","nullable":true}]}]}"#,
        );
    }

    #[test]
    fn invalid_schemas_are_refused() {
        let check = |json: &str, code: &str, part: &str| {
            let err = schema_from_json(json).unwrap_err();
            assert_eq!(err.code(), code, "{err}");
            assert!(err.to_string().contains(part), "`{err}` lacks `{part}`");
        };
        check(r#"{"dialect":"mysql"}"#, "invalid_schema", "unknown dialect `mysql`");
        check(r#"{"dialect":"pg"}"#, "invalid_schema", "unknown dialect `pg`");
        check(
            r#"{"dialect":"sqlite","tables":[{"schema":"main","name":"t","kind":"index"}]}"#,
            "invalid_schema",
            "table `main.t` has unknown kind `index`",
        );
        check(r#"{"tables":[]}"#, "invalid_schema", "missing field `dialect`");
        check(r#"["postgres"]"#, "invalid_schema", "expected a JSON object");
        check(
            r#"{"dialect":"sqlite","tables":[{"schema":"main","name":"t","kind":"table","columns":[{"name":"a"}]}]}"#,
            "invalid_schema",
            "missing field `data_type`",
        );
        check("", "invalid_schema", "EOF");

        let mut report = SchemaReport::new(&sample_schema());
        report.schema.tables[0].columns[0].data_type = "bigint".into();
        let err = report.into_schema().unwrap_err();
        assert_eq!(err.code(), "invalid_schema");
        assert!(err.to_string().contains("fingerprint mismatch"), "{err}");
    }
}
