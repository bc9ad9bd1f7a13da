//! The read-only SQL guard: SQL from the shared corpora (security attacks,
//! legitimate queries, the evaluation's gold queries) mutated at the character,
//! token and structure level, plus arbitrary text, checked by four guards
//! (PostgreSQL and SQLite, without and with a schema and a policy).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::ControlFlow;
use std::sync::Arc;

use custard_core::{CheckedSql, Column, Dialect, Guard, RejectionCode, Schema, Table};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use serde_json::Value;
use sqlparser::ast::{Query, Select, Statement, Visit, Visitor};
use sqlparser::dialect::{PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;

use crate::mutate::{interesting_char, wild_text};
use crate::runner::FuzzTarget;

/// The guard's default SQL size limit (`Guard::builder`), which every guard here keeps.
const MAX_SQL_BYTES: usize = 256 * 1024;
/// Generated SQL is cut here: far enough past the limit to test it.
const MAX_GENERATED_BYTES: usize = MAX_SQL_BYTES + 64 * 1024;
/// Masked by the schema-aware PostgreSQL guard, as an agent's policy would.
const MASKED: &[&str] = &["public.users.password_hash", "hr.salaries.salary"];

/// Words and symbols that SQL grammars care about, for splicing and keyword soup.
const TOKENS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "WITH",
    "RECURSIVE",
    "AS",
    "UNION",
    "ALL",
    "INTERSECT",
    "EXCEPT",
    "INTO",
    "FOR",
    "UPDATE",
    "SHARE",
    "NOWAIT",
    "DELETE",
    "INSERT",
    "MERGE",
    "VALUES",
    "TABLE",
    "LATERAL",
    "JOIN",
    "LEFT",
    "CROSS",
    "NATURAL",
    "ON",
    "USING",
    "GROUP",
    "BY",
    "ORDER",
    "HAVING",
    "LIMIT",
    "OFFSET",
    "FETCH",
    "FIRST",
    "ROWS",
    "ONLY",
    "RETURNING",
    "COPY",
    "SET",
    "SHOW",
    "EXPLAIN",
    "ANALYZE",
    "PRAGMA",
    "ATTACH",
    "DATABASE",
    "DROP",
    "CREATE",
    "TEMP",
    "TRUNCATE",
    "GRANT",
    "CALL",
    "DO",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "NOT",
    "NULL",
    "IS",
    "IN",
    "EXISTS",
    "BETWEEN",
    "LIKE",
    "ILIKE",
    "SIMILAR",
    "TO",
    "ESCAPE",
    "CAST",
    "::",
    "OPERATOR(pg_catalog.+)",
    "ARRAY",
    "ROW",
    "WINDOW",
    "OVER",
    "PARTITION",
    "FILTER",
    "WITHIN",
    "TABLESAMPLE",
    "DISTINCT",
    "COLLATE",
    "pg_sleep(1)",
    "pg_catalog.pg_class",
    "sqlite_master",
    "information_schema.tables",
    "pragma_table_info('t')",
    "lower(x)",
    "count(*)",
    "$1",
    "?",
    ":name",
    "@x",
    "E'\\''",
    "$$x$$",
    "/*",
    "*/",
    "--",
    "'",
    "\"",
    "`",
    ";",
    "(",
    ")",
    "[",
    "]",
    ",",
    "*",
    ".",
    "t",
    "users",
    "orders",
    "hr.salaries",
    "password_hash",
    "x",
    "id",
    "1",
    "1e999",
    "-",
    "+",
    "||",
    "->>",
    "#>",
    "@>",
    "~",
    "!",
    "=",
    "<>",
    "\n",
    "\t",
];

/// Text repeated many times to build deep or wide inputs.
const REPEATS: &[&str] = &[
    " UNION SELECT 1",
    " UNION ALL SELECT * FROM t",
    "NOT ",
    "-",
    "(",
    ")",
    "CASE WHEN 1 THEN ",
    "[1]",
    "::int",
    ", 1",
    " OR 1=1",
    "SELECT * FROM (",
    "WITH a AS (",
    " JOIN t ON true",
    "/*",
    "'",
    "x.",
];

/// Trailing text that turns a read into something else.
const APPENDS: &[&str] = &[
    "; DROP TABLE t",
    "; SELECT 1",
    " FOR UPDATE",
    " INTO x",
    " RETURNING *",
    " LIMIT 5",
    " LIMIT 1000000",
    " LIMIT ALL",
    " OFFSET 1",
    " FETCH FIRST 3 ROWS ONLY",
    " --",
    " /*",
    ";",
    " UNION SELECT password_hash FROM users",
    " ORDER BY pg_sleep(1)",
];

/// One mutation of SQL text.
#[derive(Clone, Debug)]
enum SqlEdit {
    Insert(Index, String),
    Delete(Index, usize),
    Replace(Index, String),
    /// A span of another seed, spliced in.
    Splice(Index, Index, Index, usize),
    Duplicate(Index, usize),
    FlipCase(Index, usize),
    /// `(` * n + sql + `)` * n
    Parens(usize),
    /// `SELECT * FROM (` * n + sql + `) s` * n
    Subqueries(usize),
    Repeat(Index, &'static str, usize),
    Append(&'static str),
    /// Pads the SQL with a trailing comment to this many bytes.
    PadTo(usize),
}

/// Where a case's SQL came from.
#[derive(Clone)]
enum Origin {
    /// The seed at this index of the sorted corpus.
    Seed(usize),
    Arbitrary,
    Soup,
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Seed(i) => write!(f, "seed #{i}"),
            Origin::Arbitrary => f.write_str("arbitrary text"),
            Origin::Soup => f.write_str("keyword soup"),
        }
    }
}

/// One generated SQL input: its origin, edits and the result.
#[derive(Clone)]
pub(crate) struct SqlCase {
    origin: Origin,
    edits: Vec<SqlEdit>,
    sql: String,
}

impl fmt::Debug for SqlCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlCase")
            .field("sql", &self.sql)
            .field("bytes", &self.sql.len())
            .field("origin", &self.origin)
            .field("edits", &self.edits)
            .finish()
    }
}

/// The byte offset of a char boundary chosen by `at` (0 ..= len).
fn boundary(s: &str, at: &Index) -> usize {
    let chars = s.chars().count();
    let nth = at.index(chars + 1);
    s.char_indices().nth(nth).map_or(s.len(), |(b, _)| b)
}

/// The byte offset `len` characters after `start`.
fn span_end(s: &str, start: usize, len: usize) -> usize {
    s[start..].char_indices().nth(len).map_or(s.len(), |(b, _)| start + b)
}

fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

impl SqlEdit {
    fn apply(&self, sql: &mut String, seeds: &[String]) {
        match self {
            SqlEdit::Insert(at, text) => {
                let at = boundary(sql, at);
                sql.insert_str(at, text);
            }
            SqlEdit::Delete(at, len) => {
                let at = boundary(sql, at);
                let end = span_end(sql, at, *len);
                sql.replace_range(at..end, "");
            }
            SqlEdit::Replace(at, text) => {
                let at = boundary(sql, at);
                let end = span_end(sql, at, text.chars().count().max(1));
                sql.replace_range(at..end, text);
            }
            SqlEdit::Splice(at, seed, from, len) => {
                let other = &seeds[seed.index(seeds.len())];
                let start = boundary(other, from);
                let end = span_end(other, start, *len);
                let at = boundary(sql, at);
                sql.insert_str(at, &other[start..end]);
            }
            SqlEdit::Duplicate(at, len) => {
                let at = boundary(sql, at);
                let end = span_end(sql, at, *len);
                let span = sql[at..end].to_owned();
                sql.insert_str(end, &span);
            }
            SqlEdit::FlipCase(at, len) => {
                let at = boundary(sql, at);
                let end = span_end(sql, at, *len);
                let flipped: String = sql[at..end]
                    .chars()
                    .map(|c| {
                        if c.is_lowercase() {
                            c.to_uppercase().next().unwrap_or(c)
                        } else {
                            c.to_lowercase().next().unwrap_or(c)
                        }
                    })
                    .collect();
                sql.replace_range(at..end, &flipped);
            }
            SqlEdit::Parens(n) => *sql = format!("{}{sql}{}", "(".repeat(*n), ")".repeat(*n)),
            SqlEdit::Subqueries(n) => {
                *sql = format!("{}{sql}{}", "SELECT * FROM (".repeat(*n), ") s".repeat(*n));
            }
            SqlEdit::Repeat(at, text, n) => {
                let at = boundary(sql, at);
                let count = (*n).min(MAX_GENERATED_BYTES / text.len().max(1));
                sql.insert_str(at, &text.repeat(count));
            }
            SqlEdit::Append(text) => sql.push_str(text),
            SqlEdit::PadTo(bytes) => {
                if sql.len() + 4 < *bytes {
                    let pad = bytes - sql.len() - 4;
                    sql.push_str("\n-- ");
                    sql.push_str(&"p".repeat(pad));
                }
            }
        }
        cut(sql, MAX_GENERATED_BYTES);
    }
}

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::collection::vec(interesting_char(), 1..4).prop_map(String::from_iter),
        2 => select(TOKENS).prop_map(|t| format!(" {t} ")),
        1 => select(TOKENS).prop_map(str::to_owned),
    ]
}

fn sql_edit() -> impl Strategy<Value = SqlEdit> {
    prop_oneof![
        6 => (any::<Index>(), fragment()).prop_map(|(i, t)| SqlEdit::Insert(i, t)),
        4 => (any::<Index>(), 1usize..12).prop_map(|(i, n)| SqlEdit::Delete(i, n)),
        4 => (any::<Index>(), fragment()).prop_map(|(i, t)| SqlEdit::Replace(i, t)),
        3 => (any::<Index>(), any::<Index>(), any::<Index>(), 1usize..60)
            .prop_map(|(a, s, f, n)| SqlEdit::Splice(a, s, f, n)),
        2 => (any::<Index>(), 1usize..40).prop_map(|(i, n)| SqlEdit::Duplicate(i, n)),
        1 => (any::<Index>(), 1usize..40).prop_map(|(i, n)| SqlEdit::FlipCase(i, n)),
        1 => (1usize..300).prop_map(SqlEdit::Parens),
        1 => (1usize..120).prop_map(SqlEdit::Subqueries),
        1 => (any::<Index>(), select(REPEATS), 1usize..5000)
            .prop_map(|(i, t, n)| SqlEdit::Repeat(i, t, n)),
        2 => select(APPENDS).prop_map(SqlEdit::Append),
        1 => (MAX_SQL_BYTES - 8..MAX_SQL_BYTES + 8).prop_map(SqlEdit::PadTo),
    ]
}

fn keyword_soup() -> impl Strategy<Value = String> {
    proptest::collection::vec((select(TOKENS), select(&[" ", " ", " ", "", "\n", ","][..])), 0..40)
        .prop_map(|parts| parts.into_iter().flat_map(|(t, sep)| [t, sep]).collect())
}

/// The SQL strings of the shared corpora: attacks, legitimate queries and gold queries.
pub(crate) fn seeds() -> Vec<String> {
    let mut seeds = Vec::new();
    for file in ["security/attacks.jsonl", "security/legit.jsonl", "eval/defog/questions.jsonl"] {
        let path = custard_testkit::testdata_dir().join(file);
        if !path.is_file() {
            continue;
        }
        for line in custard_testkit::testdata_jsonl_lines(file) {
            let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
            if let Some(sql) = v["sql"].as_str() {
                seeds.push(sql.to_owned());
            }
            for gold in v["gold"].as_array().into_iter().flatten() {
                if let Some(sql) = gold.as_str() {
                    seeds.push(sql.to_owned());
                }
            }
        }
    }
    seeds.sort();
    seeds.dedup();
    seeds
}

/// Tables the security corpus names, plus every table of the evaluation databases.
fn schema(dialect: Dialect) -> Schema {
    let main = dialect.default_schema();
    let col = |name: &str| Column::new(name, "text");
    let table = |schema: &str, name: &str, cols: &[&str]| {
        Table::new(schema, name, cols.iter().map(|c| col(c)).collect())
    };
    let mut tables = vec![
        table(
            main,
            "t",
            &["id", "x", "a", "b", "status", "amount", "created_at", "delete", "update", "name"],
        ),
        table(main, "users", &["id", "name", "email", "role", "password_hash", "created_at"]),
        table(
            main,
            "orders",
            &["id", "customer_id", "status", "amount", "created_at", "updated_at", "is_deleted"],
        ),
        table(main, "accounts", &["id", "owner", "balance"]),
        table(main, "refunds", &["id", "order_id", "amount"]),
        table("hr", "salaries", &["id", "user_id", "salary"]),
    ];
    let defog = custard_testkit::testdata_dir().join("eval/defog");
    for db in custard_testkit::DEFOG_DATABASES {
        let Ok(text) = std::fs::read_to_string(defog.join(format!("{db}.json"))) else { continue };
        let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
        for (name, columns) in v["table_metadata"].as_object().into_iter().flatten() {
            if tables.iter().any(|t| t.schema == main && &t.name == name) {
                continue;
            }
            let columns = columns
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["column_name"].as_str())
                .map(col)
                .collect();
            tables.push(Table::new(main, name.clone(), columns));
        }
    }
    Schema { dialect, tables }
}

/// A guard and what its configuration promises about accepted SQL.
struct Setup {
    name: &'static str,
    guard: Guard,
    /// Every table read must be in one of these schemas.
    allowed_schemas: Option<&'static [&'static str]>,
    max_rows: Option<u64>,
    recursion_limit: usize,
}

/// Accepted and rejected counts per guard.
#[derive(Default)]
struct Counts {
    accepted: BTreeMap<&'static str, u64>,
    rejected: BTreeMap<(&'static str, &'static str), u64>,
}

pub(crate) struct GuardTarget {
    seeds: Arc<Vec<String>>,
    setups: Vec<Setup>,
    counts: RefCell<Counts>,
}

impl GuardTarget {
    pub(crate) fn new() -> Result<Self, String> {
        let seeds = seeds();
        if seeds.is_empty() {
            return Err("no seed SQL found in the shared folder".to_owned());
        }
        let build = |b: custard_core::GuardBuilder| b.build().map_err(|e| e.to_string());
        let setups = vec![
            Setup {
                name: "postgres",
                guard: build(Guard::builder(Dialect::Postgres))?,
                allowed_schemas: None,
                max_rows: Some(1000),
                recursion_limit: 64,
            },
            Setup {
                name: "sqlite",
                guard: build(Guard::builder(Dialect::Sqlite))?,
                allowed_schemas: None,
                max_rows: Some(1000),
                recursion_limit: 64,
            },
            Setup {
                name: "postgres+schema+policy",
                guard: build(
                    Guard::builder(Dialect::Postgres)
                        .schema(schema(Dialect::Postgres))
                        .search_path(["public", "hr"])
                        .allow_schemas(["public", "hr"])
                        .mask_columns(MASKED.iter().copied())
                        .max_rows(100),
                )?,
                allowed_schemas: Some(&["public", "hr"]),
                max_rows: Some(100),
                recursion_limit: 64,
            },
            Setup {
                name: "sqlite+schema",
                guard: build(
                    Guard::builder(Dialect::Sqlite)
                        .schema(schema(Dialect::Sqlite))
                        .allow_schemas(["main"])
                        .unlimited_rows()
                        .recursion_limit(32),
                )?,
                allowed_schemas: Some(&["main"]),
                max_rows: None,
                recursion_limit: 32,
            },
        ];
        Ok(GuardTarget { seeds: Arc::new(seeds), setups, counts: RefCell::default() })
    }

    /// Checks one SQL string with one guard and every property of the result.
    fn check_with(&self, setup: &Setup, sql: &str, count: bool) -> Result<(), String> {
        let name = setup.name;
        let result = setup.guard.check(sql);
        let too_long = sql.len() > MAX_SQL_BYTES;
        match &result {
            Err(r) if r.code == RejectionCode::TooLong && !too_long => {
                return Err(format!(
                    "[{name}] {} bytes refused as too long: {}",
                    sql.len(),
                    r.message
                ));
            }
            Err(r) if r.code != RejectionCode::TooLong && too_long => {
                return Err(format!(
                    "[{name}] {} bytes (over the limit) were parsed: {}",
                    sql.len(),
                    r.code
                ));
            }
            Ok(_) if too_long => {
                return Err(format!("[{name}] {} bytes (over the limit) were accepted", sql.len()));
            }
            _ => {}
        }
        let checked = match result {
            Err(r) => {
                if r.message.trim().is_empty() {
                    return Err(format!("[{name}] rejection {} without a message", r.code));
                }
                if count {
                    *self
                        .counts
                        .borrow_mut()
                        .rejected
                        .entry((name, r.code.as_str()))
                        .or_default() += 1;
                }
                return Ok(());
            }
            Ok(c) => c,
        };
        if count {
            *self.counts.borrow_mut().accepted.entry(name).or_default() += 1;
        }
        self.accepted(setup, sql, &checked).map_err(|e| {
            format!("[{name}] {e}\n  query(): {}\n  sql():   {}", checked.query(), checked.sql())
        })
    }

    /// What must hold of accepted SQL.
    fn accepted(&self, setup: &Setup, input: &str, checked: &CheckedSql) -> Result<(), String> {
        let guard = &setup.guard;
        if checked.dialect() != guard.dialect() {
            return Err(format!(
                "checked for {} by a {} guard",
                checked.dialect(),
                guard.dialect()
            ));
        }
        // The SQL that runs is read-only in the parser's own eyes.
        read_only(guard.dialect(), checked.sql(), setup.recursion_limit + 8)?;
        match setup.max_rows {
            Some(max) => {
                if checked.row_limit() != Some(max) {
                    return Err(format!("row limit {:?}, not {max}", checked.row_limit()));
                }
                let wrapped = checked.sql().ends_with(&format!(" LIMIT {}", max + 1));
                if !wrapped && checked.sql() != checked.query() {
                    return Err(
                        "sql() is neither query() nor query() wrapped in a limit".to_owned()
                    );
                }
            }
            None => {
                if checked.row_limit().is_some() || checked.sql() != checked.query() {
                    return Err("an unlimited guard added a row limit".to_owned());
                }
            }
        }
        for table in checked.tables() {
            let (schema, name) = table.split_once('.').unwrap_or(("", table));
            let (schema_l, name_l) = (schema.to_lowercase(), name.to_lowercase());
            let system = match guard.dialect() {
                Dialect::Sqlite => name_l.starts_with("sqlite_") || name_l.starts_with("pragma_"),
                _ => {
                    name_l.starts_with("pg_")
                        || schema_l.starts_with("pg_")
                        || schema_l == "information_schema"
                }
            };
            if system {
                return Err(format!("reads the system catalog {table}"));
            }
            if let Some(allowed) = setup.allowed_schemas
                && !allowed.contains(&schema)
            {
                return Err(format!("reads {table}, outside the allowed schemas {allowed:?}"));
            }
        }
        // The printed query means what was checked: it parses to the same tree.
        let parse = |sql: &str| parse(guard.dialect(), sql, setup.recursion_limit + 8);
        if parse(checked.query())? != parse(input)? {
            let again = guard.check(checked.query()).map(|c| c.query().to_owned());
            return Err(format!(
                "query() parses to another tree than the SQL that was checked (the text that runs \
                 is not what was checked); query() checked again prints\n  {again:?}"
            ));
        }
        // Idempotent acceptance: the printed query passes again, unchanged.
        let again = guard.check(checked.query()).map_err(|r| {
            format!("query() is rejected when checked again: {}: {}", r.code, r.message)
        })?;
        if again.query() != checked.query() {
            return Err(format!(
                "printing is not a fixed point: query() checked again prints\n  {}",
                again.query()
            ));
        }
        // The agent checks the SQL the server sends, sql(), with its own guard again.
        guard.check(checked.sql()).map_err(|r| {
            format!(
                "sql() (what the agent is sent) is rejected when checked again: {}: {}",
                r.code, r.message
            )
        })?;
        Ok(())
    }
}

/// Parses `sql` again, independently of the guard, and fails on anything that
/// is not one read-only query: another statement anywhere, `SELECT INTO`, locks.
fn read_only(dialect: Dialect, sql: &str, recursion_limit: usize) -> Result<(), String> {
    struct Writes(Option<String>);
    impl Visitor for Writes {
        type Break = ();
        fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
            if !matches!(s, Statement::Query(_)) {
                self.0 = Some(format!("a nested statement: {s}"));
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            if !q.locks.is_empty() {
                self.0 = Some(format!("a locking clause: {q}"));
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
            if let Some(into) = &s.into {
                self.0 = Some(format!("a SELECT INTO: {into}"));
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let statements = parse(dialect, sql, recursion_limit)?;
    let [statement] = statements.as_slice() else {
        return Err(format!("the accepted SQL holds {} statements", statements.len()));
    };
    if !matches!(statement, Statement::Query(_)) {
        return Err("the accepted SQL is not a query".to_owned());
    }
    let mut writes = Writes(None);
    let _ = statement.visit(&mut writes);
    match writes.0 {
        Some(what) => Err(format!("the accepted SQL holds {what}")),
        None => Ok(()),
    }
}

/// Parses `sql` with the guard's parser settings, independently of the guard.
fn parse(dialect: Dialect, sql: &str, recursion_limit: usize) -> Result<Vec<Statement>, String> {
    let parser = match dialect {
        Dialect::Sqlite => Parser::new(&SQLiteDialect {}),
        _ => Parser::new(&PostgreSqlDialect {}),
    };
    parser
        .with_recursion_limit(recursion_limit)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| format!("accepted SQL does not parse again: {e}"))
}

impl FuzzTarget for GuardTarget {
    type Input = SqlCase;

    fn strategy(&self) -> BoxedStrategy<SqlCase> {
        let seeds = Arc::clone(&self.seeds);
        let from_seed = (0..self.seeds.len(), proptest::collection::vec(sql_edit(), 0..6))
            .prop_map(move |(seed, edits)| {
                let mut sql = seeds[seed].clone();
                for edit in &edits {
                    edit.apply(&mut sql, &seeds);
                }
                SqlCase { origin: Origin::Seed(seed), edits, sql }
            });
        let arbitrary = prop_oneof![
            wild_text(300),
            any::<String>(),
            proptest::collection::vec(any::<u8>(), 0..300)
                .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ]
        .prop_map(|sql| SqlCase { origin: Origin::Arbitrary, edits: Vec::new(), sql });
        let soup =
            keyword_soup().prop_map(|sql| SqlCase { origin: Origin::Soup, edits: Vec::new(), sql });
        prop_oneof![8 => from_seed, 1 => arbitrary, 1 => soup].boxed()
    }

    fn check(&self, input: &SqlCase, count: bool) -> Result<(), String> {
        for setup in &self.setups {
            self.check_with(setup, &input.sql, count)?;
        }
        Ok(())
    }

    fn size(&self, input: &SqlCase) -> usize {
        input.sql.len()
    }

    fn stats(&self) -> Vec<String> {
        let counts = self.counts.borrow();
        let mut lines = Vec::new();
        for setup in &self.setups {
            let accepted = counts.accepted.get(setup.name).copied().unwrap_or(0);
            let mut codes: Vec<(u64, &str)> = counts
                .rejected
                .iter()
                .filter(|((n, _), _)| *n == setup.name)
                .map(|((_, code), count)| (*count, *code))
                .collect();
            codes.sort_unstable_by(|a, b| b.cmp(a));
            let codes: Vec<String> = codes.iter().map(|(n, c)| format!("{c} {n}")).collect();
            lines.push(format!(
                "{}: accepted {accepted}; rejected: {}",
                setup.name,
                codes.join(", ")
            ));
        }
        lines
    }
}
