//! The access policy as data: which schemas and tables may be read, and which
//! columns never are.
//!
//! The guard enforces this policy on the SQL (layer 1); [`AccessPolicy`] lets
//! the database enforce it too (layer 4): the SQLite executor installs an
//! authorizer from it, and the agent checks a PostgreSQL role's privileges
//! against it at start. Pure data: no IO.

use crate::{Dialect, GuardConfigError};

/// What may be read: allowed schemas, allowed tables and masked columns.
///
/// Written the way the agent is configured (`CUSTARD_ALLOWED_SCHEMAS`,
/// `CUSTARD_ALLOWED_TABLES`, `CUSTARD_MASKED_COLUMNS`) and parsed by the same
/// rules as [`GuardBuilder`](crate::GuardBuilder): a table is `schema.table`
/// (split at the first dot), a column is `schema.table.column` (split at the
/// first two dots). `None` allows every schema (or table); the default policy
/// restricts nothing.
///
/// Names compare the way the dialect compares catalog names: exactly in
/// PostgreSQL, ASCII case-insensitively in SQLite and MySQL.
///
/// ```
/// use custard_core::{AccessPolicy, Dialect};
///
/// let policy = AccessPolicy::new(
///     Some(vec!["main".into()]),
///     Some(vec!["main.people".into()]),
///     vec!["main.people.salary".into()],
/// )?;
/// assert!(policy.allows_table(Dialect::Sqlite, "main", "People"));
/// assert!(!policy.allows_table(Dialect::Sqlite, "main", "payroll"));
/// assert!(policy.is_masked(Dialect::Sqlite, "main", "people", "SALARY"));
/// assert!(AccessPolicy::new(None, Some(vec!["people".into()]), vec![]).is_err());
/// # Ok::<(), custard_core::GuardConfigError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    allowed_schemas: Option<Vec<String>>,
    allowed_tables: Option<Vec<(String, String)>>,
    masked_columns: Vec<(String, String, String)>,
}

impl AccessPolicy {
    /// Parses a policy. Fails with [`GuardConfigError::UnqualifiedAllowedTable`]
    /// for a table not written `schema.table`, and with
    /// [`GuardConfigError::UnqualifiedMaskedColumn`] for a column not written
    /// `schema.table.column`.
    pub fn new(
        allowed_schemas: Option<Vec<String>>,
        allowed_tables: Option<Vec<String>>,
        masked_columns: Vec<String>,
    ) -> Result<Self, GuardConfigError> {
        let allowed_tables = match allowed_tables {
            None => None,
            Some(list) => Some(
                list.into_iter()
                    .map(|t| match t.split_once('.') {
                        Some((s, n)) if !s.is_empty() && !n.is_empty() => {
                            Ok((s.to_owned(), n.to_owned()))
                        }
                        _ => Err(GuardConfigError::UnqualifiedAllowedTable(t)),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let masked_columns = masked_columns
            .into_iter()
            .map(|c| {
                let parts: Vec<&str> = c.splitn(3, '.').collect();
                match parts.as_slice() {
                    [s, t, col] if !s.is_empty() && !t.is_empty() && !col.is_empty() => {
                        Ok(((*s).to_owned(), (*t).to_owned(), (*col).to_owned()))
                    }
                    _ => Err(GuardConfigError::UnqualifiedMaskedColumn(c.clone())),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AccessPolicy { allowed_schemas, allowed_tables, masked_columns })
    }

    /// Whether the policy restricts nothing (no schema or table list, no mask).
    pub fn is_unrestricted(&self) -> bool {
        self.allowed_schemas.is_none()
            && self.allowed_tables.is_none()
            && self.masked_columns.is_empty()
    }

    /// The schemas that may be read; `None` allows every schema.
    pub fn allowed_schemas(&self) -> Option<&[String]> {
        self.allowed_schemas.as_deref()
    }

    /// The tables that may be read, as (schema, table); `None` allows every
    /// table of the allowed schemas.
    pub fn allowed_tables(&self) -> Option<&[(String, String)]> {
        self.allowed_tables.as_deref()
    }

    /// The masked columns, as (schema, table, column).
    pub fn masked_columns(&self) -> &[(String, String, String)] {
        &self.masked_columns
    }

    /// Whether tables of `schema` may be read at all.
    pub fn allows_schema(&self, dialect: Dialect, schema: &str) -> bool {
        self.allowed_schemas
            .as_ref()
            .is_none_or(|list| list.iter().any(|s| same(dialect, s, schema)))
    }

    /// Whether `schema.table` may be read: its schema is allowed and, when
    /// tables are listed, it is one of them.
    pub fn allows_table(&self, dialect: Dialect, schema: &str, table: &str) -> bool {
        self.allows_schema(dialect, schema)
            && self.allowed_tables.as_ref().is_none_or(|list| {
                list.iter().any(|(s, t)| same(dialect, s, schema) && same(dialect, t, table))
            })
    }

    /// Whether `schema.table.column` is masked.
    pub fn is_masked(&self, dialect: Dialect, schema: &str, table: &str, column: &str) -> bool {
        self.masked_columns.iter().any(|(s, t, c)| {
            same(dialect, s, schema) && same(dialect, t, table) && same(dialect, c, column)
        })
    }

    /// The masked columns of `schema.table`, as the policy spells them.
    pub fn masked_in<'a>(
        &'a self,
        dialect: Dialect,
        schema: &'a str,
        table: &'a str,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.masked_columns
            .iter()
            .filter(move |(s, t, _)| same(dialect, s, schema) && same(dialect, t, table))
            .map(|(_, _, c)| c.as_str())
    }
}

/// Whether two catalog names are the same name in `dialect`.
fn same(dialect: Dialect, a: &str, b: &str) -> bool {
    match dialect {
        Dialect::Postgres => a == b,
        // SQLite folds ASCII letters only; "Ä" and "ä" are different names.
        _ => a.eq_ignore_ascii_case(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(schemas: Option<&[&str]>, tables: Option<&[&str]>, masked: &[&str]) -> AccessPolicy {
        let list = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        AccessPolicy::new(schemas.map(list), tables.map(list), list(masked)).expect("valid")
    }

    #[test]
    fn parsing_follows_the_guard() {
        let p = policy(Some(&["public"]), Some(&["public.a.b"]), &["s.t.c.d"]);
        assert_eq!(p.allowed_tables(), Some(&[("public".to_owned(), "a.b".to_owned())][..]));
        assert_eq!(p.masked_columns(), &[("s".to_owned(), "t".to_owned(), "c.d".to_owned())]);
        let bad_tables = ["t", ".t", "s.", ""];
        for t in bad_tables {
            assert_eq!(
                AccessPolicy::new(None, Some(vec![t.to_owned()]), vec![]),
                Err(GuardConfigError::UnqualifiedAllowedTable(t.to_owned())),
                "{t}"
            );
        }
        for c in ["t.c", "s..c", ".t.c", "s.t.", "c", ""] {
            assert_eq!(
                AccessPolicy::new(None, None, vec![c.to_owned()]),
                Err(GuardConfigError::UnqualifiedMaskedColumn(c.to_owned())),
                "{c}"
            );
        }
        assert!(AccessPolicy::default().is_unrestricted());
        assert!(!policy(None, None, &["s.t.c"]).is_unrestricted());
        assert!(!policy(Some(&[]), None, &[]).is_unrestricted());
    }

    #[test]
    fn names_compare_as_the_dialect_does() {
        let p = policy(Some(&["Sales"]), Some(&["Sales.Orders"]), &["Sales.Orders.Secret"]);
        let pg = Dialect::Postgres;
        let lite = Dialect::Sqlite;
        assert!(p.allows_table(pg, "Sales", "Orders"));
        assert!(!p.allows_table(pg, "sales", "orders"));
        assert!(p.allows_table(lite, "sales", "ORDERS"));
        assert!(!p.allows_table(lite, "sales", "other"));
        assert!(!p.allows_table(lite, "main", "orders"));
        assert!(p.is_masked(pg, "Sales", "Orders", "Secret"));
        assert!(!p.is_masked(pg, "Sales", "Orders", "secret"));
        assert!(p.is_masked(lite, "sales", "orders", "SECRET"));
        assert_eq!(p.masked_in(lite, "SALES", "orders").collect::<Vec<_>>(), ["Secret"]);
        // Only ASCII folds: SQLite keeps "Ä" and "ä" apart.
        let u = policy(None, Some(&["main.Ä"]), &[]);
        assert!(!u.allows_table(lite, "main", "ä"));
        // Schemas only: every table of an allowed schema.
        let s = policy(Some(&["main"]), None, &[]);
        assert!(s.allows_table(lite, "MAIN", "anything"));
        assert!(!s.allows_table(lite, "temp", "anything"));
        assert!(AccessPolicy::default().allows_table(pg, "x", "y"));
    }
}
