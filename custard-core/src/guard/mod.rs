//! The read-only SQL guard: layer 1 of Custard's four read-only layers.
//!
//! SQL is parsed with `sqlparser` (with a recursion limit) and the whole AST is
//! walked: only a single query is accepted, with no data-modifying CTE, no
//! `SELECT INTO`, no locking clause, only allow-listed functions and no system
//! catalogs. With a [`Schema`], unknown tables and columns are rejected with
//! suggestions. The row limit is enforced by wrapping the query.

mod functions;
mod names;
mod policy;
mod scope;

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use crate::codes::codes;
use crate::{Dialect, Schema};

pub(crate) use names::NameIndex;

codes! {
    /// The closed set of reasons the guard rejects SQL.
    pub enum RejectionCode {
        /// The input holds no statement.
        Empty => "empty_sql",
        /// The input is longer than the guard accepts.
        TooLong => "sql_too_long",
        /// The parser could not read the input (or it nests too deeply).
        ParseError => "sql_parse_error",
        /// More than one statement.
        MultipleStatements => "multiple_statements",
        /// A statement that is not a query (`INSERT`, `SET`, `COPY`, `EXPLAIN`, ...).
        NotAQuery => "not_a_query",
        /// A query that writes: a data-modifying CTE or `SELECT INTO`.
        DataModifying => "data_modifying",
        /// A locking clause such as `FOR UPDATE`.
        Locking => "locking_clause",
        /// A function outside the dialect's allow-list.
        FunctionNotAllowed => "function_not_allowed",
        /// A system catalog (`pg_catalog`, `information_schema`, `pg_*`, `sqlite_*`).
        SystemCatalog => "system_catalog",
        /// A table the policy does not allow.
        TableNotAllowed => "table_not_allowed",
        /// A table that is not in the known schema.
        UnknownTable => "unknown_table",
        /// A column that is not in any table the query uses.
        UnknownColumn => "unknown_column",
        /// A column the policy masks (by name, `*`, whole-row or join by name).
        ColumnMasked => "masked_column",
        /// Syntax the guard does not support, rejected to fail closed.
        Unsupported => "unsupported_sql",
    }
}

/// Why the guard refused a piece of SQL.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    /// What kind of problem it is.
    pub code: RejectionCode,
    /// A sentence naming the offending construct, fit to show a user or an LLM.
    pub message: String,
    /// Close real names, for unknown tables and columns.
    pub suggestions: Vec<String>,
}

impl Rejection {
    pub(crate) fn new(code: RejectionCode, message: impl Into<String>) -> Self {
        Rejection { code, message: message.into(), suggestions: Vec::new() }
    }
}

/// SQL that passed the guard: the only input an executor accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedSql {
    query: String,
    sql: String,
    dialect: Dialect,
    row_limit: Option<u64>,
    tables: Vec<String>,
    search_path: Arc<[String]>,
}

impl CheckedSql {
    /// The SQL to run: the parsed query printed back, wrapped in a row limit when needed.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The parsed query printed back, without the row-limit wrapper: what to
    /// show people, keep in a history, or check again under another row limit.
    ///
    /// ```
    /// use custard_core::{Dialect, Guard};
    ///
    /// let guard = Guard::builder(Dialect::Postgres).max_rows(100).build()?;
    /// let checked = guard.check("select name from users")?;
    /// assert_eq!(checked.query(), "SELECT name FROM users");
    /// assert!(checked.sql().ends_with("LIMIT 101"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn query(&self) -> &str {
        &self.query
    }

    /// The dialect the SQL was checked for.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The most rows the caller should deliver. The SQL itself asks for one row
    /// more, so an executor can tell a truncated result from a complete one.
    pub fn row_limit(&self) -> Option<u64> {
        self.row_limit
    }

    /// The tables and views the query reads as `schema.table` (unqualified
    /// names resolved on the search path; CTEs excluded), deduplicated.
    pub fn tables(&self) -> &[String] {
        &self.tables
    }

    /// The schemas the guard resolved unqualified table names in, in order:
    /// an executor runs the SQL with exactly this search path, so the
    /// database reads the tables the guard checked.
    pub fn search_path(&self) -> &[String] {
        &self.search_path
    }

    /// Builds a `CheckedSql` without the guard, for executor unit tests only
    /// (the layer-2 test runs attacks with the guard switched off).
    #[cfg(all(test, any(feature = "postgres", feature = "sqlite")))]
    pub(crate) fn for_test(sql: &str, dialect: Dialect, row_limit: Option<u64>) -> Self {
        CheckedSql {
            query: sql.to_owned(),
            sql: sql.to_owned(),
            dialect,
            row_limit,
            tables: Vec::new(),
            search_path: vec![dialect.default_schema().to_owned()].into(),
        }
    }
}

impl fmt::Display for CheckedSql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sql)
    }
}

/// An invalid guard configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GuardConfigError {
    /// `max_rows` was zero.
    #[error("max_rows must be at least 1")]
    ZeroMaxRows,
    /// The schema given is for another dialect than the guard's.
    #[error("the schema is for {schema} but the guard checks {guard} SQL")]
    DialectMismatch {
        /// The guard's dialect.
        guard: Dialect,
        /// The schema's dialect.
        schema: Dialect,
    },
    /// An allowed table was not written as `schema.table`.
    #[error("allowed table `{0}` must be written as schema.table")]
    UnqualifiedAllowedTable(String),
    /// A masked column was not written as `schema.table.column`.
    #[error("masked column `{0}` must be written as schema.table.column")]
    UnqualifiedMaskedColumn(String),
}

/// Checks SQL against the read-only policy; cheap to clone and share.
#[derive(Clone, Debug)]
pub struct Guard {
    inner: Arc<GuardInner>,
}

#[derive(Debug)]
struct GuardInner {
    dialect: Dialect,
    max_rows: Option<u64>,
    max_sql_bytes: usize,
    recursion_limit: usize,
    names: Option<NameIndex>,
    search_path: Arc<[String]>,
    allowed_schemas: Option<HashSet<String>>,
    allowed_tables: Option<HashSet<(String, String)>>,
    /// (schema, table, column), each as the catalog spells it.
    masked_columns: HashSet<(String, String, String)>,
}

/// Configures a [`Guard`]; see [`Guard::builder`].
#[derive(Clone, Debug)]
pub struct GuardBuilder {
    dialect: Dialect,
    max_rows: Option<u64>,
    max_sql_bytes: usize,
    recursion_limit: usize,
    schema: Option<Schema>,
    search_path: Option<Vec<String>>,
    allowed_schemas: Option<Vec<String>>,
    allowed_tables: Option<Vec<String>>,
    masked_columns: Vec<String>,
}

impl Guard {
    /// Starts configuring a guard for `dialect`: 1,000 rows, 256 KiB of SQL, no
    /// identifier check, every non-system schema allowed.
    pub fn builder(dialect: Dialect) -> GuardBuilder {
        GuardBuilder {
            dialect,
            max_rows: Some(1000),
            max_sql_bytes: 256 * 1024,
            recursion_limit: 64,
            schema: None,
            search_path: None,
            allowed_schemas: None,
            allowed_tables: None,
            masked_columns: Vec::new(),
        }
    }

    /// The dialect this guard checks.
    pub fn dialect(&self) -> Dialect {
        self.inner.dialect
    }

    /// Checks `sql` and returns it ready to run, or says why not.
    pub fn check(&self, sql: &str) -> Result<CheckedSql, Rejection> {
        policy::check(&self.inner, sql, self.inner.max_rows)
    }

    /// Checks `sql` like [`Guard::check`], limiting it to at most `max_rows`
    /// rows: the tighter of that and the guard's own limit. An agent checks a
    /// `run` this way, so the query is wrapped once, in the row cap it runs under.
    ///
    /// ```
    /// use custard_core::{Dialect, Guard};
    ///
    /// let guard = Guard::builder(Dialect::Postgres).max_rows(1000).build()?;
    /// let checked = guard.check_within("SELECT name FROM users", 50)?;
    /// assert_eq!(checked.row_limit(), Some(50));
    /// assert!(checked.sql().ends_with("LIMIT 51"));
    /// assert_eq!(guard.check_within("SELECT 1", 5000)?.row_limit(), Some(1000));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check_within(&self, sql: &str, max_rows: u64) -> Result<CheckedSql, Rejection> {
        let limit = self.inner.max_rows.map_or(max_rows, |own| own.min(max_rows));
        policy::check(&self.inner, sql, Some(limit))
    }
}

impl GuardBuilder {
    /// The most rows a query may return; the guard wraps queries that could return more.
    pub fn max_rows(mut self, rows: u64) -> Self {
        self.max_rows = Some(rows);
        self
    }

    /// Leaves row counts alone (for exports that stream every row).
    pub fn unlimited_rows(mut self) -> Self {
        self.max_rows = None;
        self
    }

    /// Rejects SQL longer than this many bytes before parsing it.
    pub fn max_sql_bytes(mut self, bytes: usize) -> Self {
        self.max_sql_bytes = bytes;
        self
    }

    /// How deeply expressions and subqueries may nest.
    pub fn recursion_limit(mut self, depth: usize) -> Self {
        self.recursion_limit = depth;
        self
    }

    /// Checks table and column names against `schema`.
    pub fn schema(mut self, schema: Schema) -> Self {
        self.schema = Some(schema);
        self
    }

    /// The schemas unqualified table names resolve in (default: `public`, or `main` in SQLite).
    pub fn search_path<I, S>(mut self, schemas: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.search_path = Some(schemas.into_iter().map(Into::into).collect());
        self
    }

    /// Allows only tables in these schemas.
    pub fn allow_schemas<I, S>(mut self, schemas: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_schemas = Some(schemas.into_iter().map(Into::into).collect());
        self
    }

    /// Allows only these tables, each written `schema.table`.
    pub fn allow_tables<I, S>(mut self, tables: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_tables = Some(tables.into_iter().map(Into::into).collect());
        self
    }

    /// Masks these columns, each written `schema.table.column`: no query may
    /// read them, by name or through `*`. Needs [`GuardBuilder::schema`].
    pub fn mask_columns<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.masked_columns.extend(columns.into_iter().map(Into::into));
        self
    }

    /// Validates the configuration and builds the guard.
    pub fn build(self) -> Result<Guard, GuardConfigError> {
        if self.max_rows == Some(0) {
            return Err(GuardConfigError::ZeroMaxRows);
        }
        if let Some(schema) = self.schema.as_ref().filter(|s| s.dialect != self.dialect) {
            return Err(GuardConfigError::DialectMismatch {
                guard: self.dialect,
                schema: schema.dialect,
            });
        }
        // One parser for the policy's names, shared with the executors' AccessPolicy.
        let policy = crate::AccessPolicy::new(
            self.allowed_schemas,
            self.allowed_tables,
            self.masked_columns,
        )?;
        let allowed_tables =
            policy.allowed_tables().map(|list| list.iter().cloned().collect::<HashSet<_>>());
        let masked_columns = policy
            .masked_columns()
            .iter()
            .map(|(s, t, c)| {
                let key = |name: &str| names::catalog_key(self.dialect, name);
                (key(s), key(t), key(c))
            })
            .collect();
        let search_path =
            self.search_path.unwrap_or_else(|| vec![self.dialect.default_schema().to_owned()]);
        Ok(Guard {
            inner: Arc::new(GuardInner {
                dialect: self.dialect,
                max_rows: self.max_rows,
                max_sql_bytes: self.max_sql_bytes,
                recursion_limit: self.recursion_limit,
                names: self.schema.as_ref().map(NameIndex::new),
                search_path: search_path.into(),
                allowed_schemas: policy.allowed_schemas().map(|s| s.iter().cloned().collect()),
                allowed_tables,
                masked_columns,
            }),
        })
    }
}

#[cfg(test)]
mod tests;
