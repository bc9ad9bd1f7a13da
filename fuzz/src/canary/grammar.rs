//! The canary target's query generator: a seeded grammar that reaches the
//! masked column, the forbidden tables and the catalogs in every way it knows,
//! and builds each query as a tree minimisation can simplify.
//!
//! The generator tracks scopes (tables, aliases, CTEs, outer queries) so most
//! queries are valid SQL, but picks names from small shared vocabularies: a
//! CTE named like a real table, an alias reused in another scope, a column
//! alias list renaming `secret` all happen by themselves.

use std::borrow::Cow;
use std::fmt::Write as _;

/// A generated query: text, with the parts minimisation may drop or simplify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Sql {
    /// Literal text.
    Text(Cow<'static, str>),
    /// Parts in order.
    Seq(Vec<Sql>),
    /// A part that may be left out.
    Opt(Box<Sql>),
    /// A part and simpler ones to put in its place, simplest last.
    Alt(Box<Sql>, Vec<Sql>),
    /// The database's own name (in three- and four-part names).
    Db,
    /// A part that uses a construct worth naming in a report.
    Tag(&'static str, Box<Sql>),
    /// Parts joined by a separator, empty ones left out.
    List(&'static str, Vec<Sql>),
}

fn t(text: impl Into<Cow<'static, str>>) -> Sql {
    Sql::Text(text.into())
}

fn seq(parts: Vec<Sql>) -> Sql {
    Sql::Seq(parts)
}

fn opt(part: Sql) -> Sql {
    Sql::Opt(Box::new(part))
}

fn tag(name: &'static str, part: Sql) -> Sql {
    Sql::Tag(name, Box::new(part))
}

/// `full`, or `simpler` in its place; no alternative when they are equal.
fn alt(full: Sql, simpler: Vec<Sql>) -> Sql {
    let simpler: Vec<Sql> = simpler.into_iter().filter(|s| *s != full).collect();
    if simpler.is_empty() { full } else { Sql::Alt(Box::new(full), simpler) }
}

impl Sql {
    /// The SQL text, `db` standing for the database's name.
    pub(crate) fn render(&self, db: &str) -> String {
        let mut out = String::new();
        self.render_into(db, &mut out);
        out
    }

    fn render_into(&self, db: &str, out: &mut String) {
        match self {
            Sql::Text(s) => out.push_str(s),
            Sql::Seq(parts) => parts.iter().for_each(|p| p.render_into(db, out)),
            Sql::Opt(part) => part.render_into(db, out),
            Sql::Alt(full, _) => full.render_into(db, out),
            Sql::Db => out.push_str(db),
            Sql::Tag(_, part) => part.render_into(db, out),
            Sql::List(sep, parts) => {
                let mut first = true;
                for part in parts {
                    let text = part.render(db);
                    if text.is_empty() {
                        continue;
                    }
                    if !first {
                        out.push_str(sep);
                    }
                    first = false;
                    out.push_str(&text);
                }
            }
        }
    }

    /// The constructs the query uses (the tags of its parts), sorted, each once.
    pub(crate) fn tags(&self) -> Vec<&'static str> {
        fn walk(sql: &Sql, out: &mut Vec<&'static str>) {
            match sql {
                Sql::Text(_) | Sql::Db => {}
                Sql::Seq(parts) | Sql::List(_, parts) => parts.iter().for_each(|p| walk(p, out)),
                Sql::Opt(part) | Sql::Alt(part, _) => walk(part, out),
                Sql::Tag(name, part) => {
                    out.push(name);
                    walk(part, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self, &mut out);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// SQL text in which `placeholder` stands for the database's name.
    pub(crate) fn from_text(text: &str, placeholder: &str) -> Sql {
        let mut parts = Vec::new();
        for (i, piece) in text.split(placeholder).enumerate() {
            if i > 0 {
                parts.push(Sql::Db);
            }
            parts.push(t(piece.to_owned()));
        }
        seq(parts)
    }

    /// The simplifications (see [`Sql::simplifications`]) whose text is
    /// shorter, each once, shortest first, with their text.
    pub(crate) fn shorter(&self, db: &str) -> Vec<(String, Sql)> {
        let length = self.render(db).len();
        let mut out: Vec<(String, Sql)> = Vec::new();
        for s in self.simplifications() {
            let text = s.render(db);
            if text.len() < length && !out.iter().any(|(t, _)| *t == text) {
                out.push((text, s));
            }
        }
        out.sort_by_key(|(t, _)| t.len());
        out
    }

    /// Every tree one simplification away: one optional part dropped, or one
    /// part replaced by a simpler alternative.
    pub(crate) fn simplifications(&self) -> Vec<Sql> {
        match self {
            Sql::Text(_) | Sql::Db => Vec::new(),
            Sql::Seq(parts) | Sql::List(_, parts) => {
                let mut out = Vec::new();
                for (i, part) in parts.iter().enumerate() {
                    for simpler in part.simplifications() {
                        let mut parts = parts.clone();
                        parts[i] = simpler;
                        out.push(match self {
                            Sql::List(sep, _) => Sql::List(sep, parts),
                            _ => Sql::Seq(parts),
                        });
                    }
                }
                out
            }
            Sql::Opt(part) => {
                let mut out = vec![t("")];
                out.extend(part.simplifications().into_iter().map(opt));
                out
            }
            Sql::Tag(name, part) => {
                part.simplifications().into_iter().map(|p| tag(name, p)).collect()
            }
            Sql::Alt(full, simpler) => {
                let mut out = simpler.clone();
                out.extend(
                    full.simplifications()
                        .into_iter()
                        .map(|f| Sql::Alt(Box::new(f), simpler.clone())),
                );
                out
            }
        }
    }
}

/// A small, fast, seeded RNG (SplitMix64): the same seed, the same queries.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True `percent` times in a hundred.
    fn chance(&mut self, percent: u32) -> bool {
        self.below(100) < percent as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// An index chosen with these weights.
    fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut roll = self.below(total.max(1) as usize) as u32;
        for (i, w) in weights.iter().enumerate() {
            if roll < *w {
                return i;
            }
            roll -= w;
        }
        weights.len() - 1
    }
}

/// A table the databases hold (or a catalog), and its columns as the
/// generator knows them.
struct TableInfo {
    schema: &'static str,
    name: &'static str,
    columns: &'static [&'static str],
    weight: u32,
}

/// The tables and catalogs queries read; the weights favour the masked table.
const TABLES: &[TableInfo] = &[
    TableInfo { schema: "public", name: "secrets", columns: &["id", "name", "secret"], weight: 40 },
    TableInfo {
        schema: "public",
        name: "ok_tbl",
        columns: &["id", "name", "note", "secret"],
        weight: 24,
    },
    TableInfo { schema: "public", name: "forbidden", columns: &["id", "name", "note"], weight: 5 },
    TableInfo { schema: "other", name: "stuff", columns: &["id", "label"], weight: 2 },
    TableInfo {
        schema: "pg_catalog",
        name: "pg_stats",
        columns: &["tablename", "attname", "most_common_vals", "histogram_bounds"],
        weight: 3,
    },
    TableInfo { schema: "pg_catalog", name: "pg_roles", columns: &["rolname", "oid"], weight: 1 },
    TableInfo {
        schema: "pg_catalog",
        name: "pg_settings",
        columns: &["name", "setting"],
        weight: 1,
    },
    TableInfo {
        schema: "pg_catalog",
        name: "pg_description",
        columns: &["objoid", "description"],
        weight: 1,
    },
    TableInfo {
        schema: "information_schema",
        name: "columns",
        columns: &["table_schema", "table_name", "column_name"],
        weight: 1,
    },
];

/// CTE names: mostly those of real tables and catalogs, to shadow them.
const CTE_NAMES: &[(&str, u32)] = &[
    ("secrets", 30),
    ("ok_tbl", 8),
    ("forbidden", 10),
    ("pg_stats", 6),
    ("pg_roles", 2),
    ("stuff", 2),
    ("s", 8),
    ("x", 8),
    ("q", 6),
    ("c", 4),
];

/// Aliases of tables, derived tables and joins: reused across scopes.
const ALIASES: &[&str] =
    &["s", "t", "x", "q", "j", "a", "secrets", "ok_tbl", "forbidden", "sub", "c"];

/// Column aliases and alias-list names.
const COLUMN_NAMES: &[&str] =
    &["a", "b", "c", "id", "name", "secret", "note", "label", "v", "x", "current_role"];

/// Session keywords and functions in all but name.
const SESSION: &[&str] = &[
    "current_role",
    "current_role",
    "current_role",
    "current_user",
    "session_user",
    "user",
    "current_schema",
    "current_catalog",
    "CURRENT_ROLE",
    "current_schema()",
    "current_database()",
];

/// A relation in scope: what qualifies its columns and which they are.
#[derive(Clone, Debug)]
struct Rel {
    /// Its alias, or the table's name.
    qual: String,
    columns: Vec<String>,
    /// A real table read without an alias: (schema, name), for 3- and 4-part names.
    table: Option<(&'static str, &'static str)>,
}

/// What a query can see: CTEs and the relations of enclosing queries.
#[derive(Clone, Debug, Default)]
struct Env {
    /// Visible CTEs, innermost last.
    ctes: Vec<(String, Vec<String>)>,
    /// Relations of enclosing queries (correlation, LATERAL).
    outer: Vec<Rel>,
}

impl Env {
    fn cte(&self, name: &str) -> Option<&Vec<String>> {
        self.ctes.iter().rev().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    fn with_outer(&self, rels: &[Rel]) -> Env {
        let mut env = self.clone();
        env.outer.extend(rels.iter().cloned());
        env
    }
}

/// A generated query expression.
struct Query {
    sql: Sql,
    /// Its output column names (as PostgreSQL would name them, roughly).
    columns: Vec<String>,
    /// A plain SELECT, TABLE or VALUES without ORDER BY or LIMIT: usable
    /// unparenthesised as an operand of a set operation.
    simple: bool,
}

/// Generates canary queries from a seed.
pub(crate) struct Gen {
    rng: Rng,
    /// How deep in subqueries the generator is.
    qdepth: u32,
    /// How deep in nested expressions.
    edepth: u32,
}

/// Queries nest at most this deep (subqueries, CTEs, set operations).
const MAX_QUERY_DEPTH: u32 = 3;
/// Expressions nest at most this deep.
const MAX_EXPR_DEPTH: u32 = 2;

/// The name of an output column nothing can refer to.
const NO_NAME: &str = "?column?";

impl Gen {
    pub(crate) fn new(seed: u64) -> Self {
        Gen { rng: Rng::new(seed), qdepth: 0, edepth: 0 }
    }

    /// One top-level query.
    pub(crate) fn query_tree(&mut self) -> Sql {
        self.qdepth = 0;
        self.edepth = 0;
        self.query(&Env::default(), None).sql
    }

    fn query(&mut self, env: &Env, arity: Option<usize>) -> Query {
        self.qdepth += 1;
        // Expressions start afresh inside a subquery.
        let edepth = std::mem::replace(&mut self.edepth, 0);
        let deep = self.qdepth >= MAX_QUERY_DEPTH;
        let choice = if deep { 0 } else { self.rng.weighted(&[66, 14, 10, 4, 2, 4]) };
        let q = match choice {
            0 => self.select(env, arity),
            1 => self.with(env, arity),
            2 => self.set_operation(env, arity),
            3 => self.table_query(env, arity).unwrap_or_else(|| self.select(env, arity)),
            4 => self.values_query(arity),
            _ => {
                let inner = self.query(env, arity);
                let sql = alt(seq(vec![t("("), inner.sql.clone(), t(")")]), vec![inner.sql]);
                Query { sql, columns: inner.columns, simple: false }
            }
        };
        self.edepth = edepth;
        self.qdepth -= 1;
        q
    }

    fn select(&mut self, env: &Env, arity: Option<usize>) -> Query {
        let mut parts = vec![t("SELECT ")];
        if self.rng.chance(6) {
            parts.push(opt(t("DISTINCT ")));
        }
        let from_items = self.rng.weighted(&[8, 80, 12]);
        let mut rels: Vec<Rel> = Vec::new();
        let mut from = Vec::new();
        for _ in 0..from_items {
            let (sql, new) = self.source(env, &rels);
            from.push(opt(sql));
            rels.extend(new);
        }
        let (items, columns) = self.select_items(env, &rels, arity);
        parts.push(items);
        if !from.is_empty() {
            parts.push(opt(seq(vec![t(" FROM "), Sql::List(", ", from)])));
        }
        if self.rng.chance(35) {
            let p = self.predicate(env, &rels);
            parts.push(opt(seq(vec![t(" WHERE "), p])));
        }
        if self.rng.chance(3) {
            let (e, _) = self.expr(env, &rels);
            parts.push(opt(seq(vec![t(" GROUP BY "), e])));
        }
        let mut simple = true;
        if self.rng.chance(20) {
            let (e, _) = self.expr(env, &rels);
            let dir = if self.rng.chance(30) { " DESC" } else { "" };
            parts.push(opt(seq(vec![t(" ORDER BY "), e, t(dir)])));
            simple = false;
        }
        if self.rng.chance(10) {
            let n = *self.rng.pick(&[1, 2, 5, 100]);
            parts.push(opt(t(format!(" LIMIT {n}"))));
            simple = false;
        }
        Query { sql: seq(parts), columns, simple }
    }

    /// The select list: `arity` items when given.
    fn select_items(
        &mut self,
        env: &Env,
        rels: &[Rel],
        arity: Option<usize>,
    ) -> (Sql, Vec<String>) {
        let count = arity.unwrap_or_else(|| 1 + self.rng.weighted(&[50, 35, 15]));
        let mut parts = Vec::new();
        let mut columns = Vec::new();
        for i in 0..count {
            let (item, names) = if arity.is_none() && !rels.is_empty() && self.rng.chance(8) {
                if self.rng.chance(40) {
                    let names = rels.iter().flat_map(|r| r.columns.clone()).collect();
                    (alt(tag("SELECT *", t("*")), vec![t("1")]), names)
                } else {
                    let r = self.rng.pick(rels).clone();
                    let q = self.qualifier(&r.qual);
                    (alt(tag("SELECT t.*", seq(vec![q, t(".*")])), vec![t("1")]), r.columns)
                }
            } else {
                let (e, name) = if self.rng.chance(10) {
                    self.aggregate(env, rels)
                } else {
                    self.expr(env, rels)
                };
                let keyword = SESSION.iter().any(|s| e == tag("session keyword", t(*s)));
                if (keyword && self.rng.chance(50)) || self.rng.chance(25) {
                    let alias =
                        if keyword { name.clone() } else { (*self.rng.pick(COLUMN_NAMES)).into() };
                    let as_sql = t(format!(" AS {alias}"));
                    let as_sql = if SESSION.contains(&alias.as_str()) {
                        tag("column alias named like a session keyword", as_sql)
                    } else {
                        as_sql
                    };
                    (seq(vec![e, opt(as_sql)]), vec![alias])
                } else {
                    (e, vec![name])
                }
            };
            columns.extend(names);
            parts.push(if i == 0 { item } else { opt(item) });
        }
        (Sql::List(", ", parts), columns)
    }

    /// An aggregate or window function (select items only).
    fn aggregate(&mut self, env: &Env, rels: &[Rel]) -> (Sql, String) {
        if !rels.is_empty() && self.rng.chance(25) {
            let q = self.rng.pick(rels).qual.clone();
            let (sql, name) = *self.rng.pick(&[
                ("json_agg({q})", "json_agg"),
                ("string_agg({q}::text, ',')", "string_agg"),
                ("array_agg({q}.*)::text", "array_agg"),
                ("jsonb_agg({q}.*)", "jsonb_agg"),
                ("max({q}::text)", "max"),
            ]);
            let sql = tag("whole row", t(sql.replace("{q}", &q)));
            return (alt(sql, vec![t("1")]), name.to_owned());
        }
        let (x, _) = self.expr(env, rels);
        let (pre, post, name) = *self.rng.pick(&[
            ("json_agg(", ")", "json_agg"),
            ("string_agg(", "::text, ',')", "string_agg"),
            ("array_agg(", ")", "array_agg"),
            ("max(", "::text)", "max"),
            ("min(", "::text)", "min"),
            ("count(", ")", "count"),
            ("count(DISTINCT ", ")", "count"),
            ("jsonb_agg(", ")", "jsonb_agg"),
            ("array_to_string(array_agg(", "), ',')", "array_to_string"),
            ("row_number() OVER (ORDER BY ", ")", "row_number"),
            ("first_value(", ") OVER ()", "first_value"),
            ("rank() OVER (ORDER BY ", ")", "rank"),
            ("lag(", ") OVER ()", "lag"),
        ]);
        (alt(seq(vec![t(pre), x.clone(), t(post)]), vec![x]), name.to_owned())
    }

    fn with(&mut self, env: &Env, arity: Option<usize>) -> Query {
        let recursive = self.rng.chance(20);
        let ctes = 1 + self.rng.weighted(&[75, 25]);
        let mut inner = env.clone();
        let mut parts = vec![t(if recursive { "WITH RECURSIVE " } else { "WITH " })];
        let mut decls = Vec::new();
        for _ in 0..ctes {
            let weights: Vec<u32> = CTE_NAMES.iter().map(|(_, w)| *w).collect();
            let name = CTE_NAMES[self.rng.weighted(&weights)].0;
            let name_sql = self.name_variant(name);
            let list = self.rng.chance(35);
            let (body, columns, list_sql) = if recursive && self.rng.chance(60) {
                let k = 1 + self.rng.below(3);
                let base = self.query(&inner, Some(k));
                let columns = if list { self.distinct_names(k) } else { base.columns.clone() };
                let list_sql = if list { t(format!("({})", columns.join(", "))) } else { t("") };
                // The recursive term reads the CTE itself; UNION stops when nothing is new.
                let alias = if self.rng.chance(50) { *self.rng.pick(ALIASES) } else { name };
                let refs: Vec<String> = columns.iter().map(|c| format!("{alias}.{c}")).collect();
                let usable = columns.iter().all(|c| c != NO_NAME);
                let items =
                    if !usable || self.rng.chance(30) { "*".to_owned() } else { refs.join(", ") };
                let alias_sql = if alias == name { String::new() } else { format!(" AS {alias}") };
                let term = t(format!(" UNION SELECT {items} FROM {name}{alias_sql}"));
                let base_sql = if base.simple {
                    base.sql.clone()
                } else {
                    seq(vec![t("("), base.sql.clone(), t(")")])
                };
                (seq(vec![base_sql, term]), columns, list_sql)
            } else {
                let body = self.query(&inner, None);
                let columns = if list {
                    let n = 1 + self.rng.below(body.columns.len().max(1));
                    self.distinct_names(n)
                } else {
                    body.columns.clone()
                };
                let list_sql = if list { t(format!("({})", columns.join(", "))) } else { t("") };
                let mut all = columns.clone();
                all.extend(body.columns.iter().skip(columns.len()).cloned());
                (body.sql, all, list_sql)
            };
            let materialized = match self.rng.weighted(&[90, 5, 5]) {
                0 => t(""),
                1 => opt(t("MATERIALIZED ")),
                _ => opt(t("NOT MATERIALIZED ")),
            };
            let list_sql = if list { tag("CTE column list", list_sql) } else { list_sql };
            let decl = seq(vec![name_sql, list_sql, t(" AS "), materialized, t("("), body, t(")")]);
            let shadows = TABLES.iter().any(|t| t.name == name);
            let decl = tag(if shadows { "CTE named like a table" } else { "CTE" }, decl);
            decls.push(opt(decl));
            inner.ctes.push((name.to_owned(), columns));
        }
        parts.push(Sql::List(", ", decls));
        parts.push(t(" "));
        let body = self.query(&inner, arity);
        // WITH ... WITH ... is no SQL; WITH ... (WITH ...) is.
        let nested = body.sql.render("db").starts_with("WITH");
        let body_sql =
            if nested { seq(vec![t("("), body.sql.clone(), t(")")]) } else { body.sql.clone() };
        parts.push(body_sql);
        let with = seq(parts);
        let with = if recursive { tag("WITH RECURSIVE", with) } else { with };
        Query { sql: alt(with, vec![body.sql]), columns: body.columns, simple: false }
    }

    fn set_operation(&mut self, env: &Env, arity: Option<usize>) -> Query {
        let left = self.query(env, arity);
        let k = arity.unwrap_or(left.columns.len());
        let right = self.query(env, Some(k));
        let op = *self.rng.pick(&[
            " UNION ",
            " UNION ALL ",
            " UNION ALL ",
            " INTERSECT ",
            " EXCEPT ",
            " EXCEPT ALL ",
        ]);
        let operand = |q: &Query| {
            if q.simple { q.sql.clone() } else { seq(vec![t("("), q.sql.clone(), t(")")]) }
        };
        let sql = tag("set operation", seq(vec![operand(&left), t(op), operand(&right)]));
        Query { sql: alt(sql, vec![left.sql, right.sql]), columns: left.columns, simple: false }
    }

    /// `TABLE name`, when a table or CTE of the right width exists.
    fn table_query(&mut self, env: &Env, arity: Option<usize>) -> Option<Query> {
        let mut options: Vec<(String, Vec<String>, Option<&'static TableInfo>)> = env
            .ctes
            .iter()
            .map(|(n, c)| (n.clone(), c.clone(), None))
            .chain(TABLES.iter().filter(|t| t.weight >= 5).map(|t| {
                let cols = t.columns.iter().map(|c| (*c).to_owned()).collect();
                (t.name.to_owned(), cols, Some(t))
            }))
            .collect();
        if let Some(k) = arity {
            options.retain(|(_, c, _)| c.len() == k);
        }
        if options.is_empty() {
            return None;
        }
        let (name, columns, table) = options.swap_remove(self.rng.below(options.len()));
        let name_sql = match table {
            Some(table) if env.cte(&name).is_none() => self.table_name(table),
            _ => self.name_variant(&name),
        };
        let columns = env.cte(&name).cloned().unwrap_or(columns);
        Some(Query {
            sql: tag("TABLE name", seq(vec![t("TABLE "), name_sql])),
            columns,
            simple: true,
        })
    }

    fn values_query(&mut self, arity: Option<usize>) -> Query {
        let k = arity.unwrap_or_else(|| 1 + self.rng.below(3));
        let rows: Vec<String> = (1..=2)
            .map(|r| {
                let values: Vec<String> = (0..k)
                    .map(|i| if i == 0 { r.to_string() } else { format!("'v{r}{i}'") })
                    .collect();
                format!("({})", values.join(", "))
            })
            .collect();
        let columns = (1..=k).map(|i| format!("column{i}")).collect();
        Query { sql: t(format!("VALUES {}", rows.join(", "))), columns, simple: true }
    }

    /// A FROM item and the relations it brings into scope; `left` are the
    /// items before it (LATERAL sees them).
    fn source(&mut self, env: &Env, left: &[Rel]) -> (Sql, Vec<Rel>) {
        let deep = self.qdepth >= MAX_QUERY_DEPTH;
        let weights = if deep { [80, 0, 0, 5, 5] } else { [66, 11, 11, 4, 8] };
        match self.rng.weighted(&weights) {
            0 => self.table_ref(env),
            1 => self.derived(env, left),
            2 => self.join(env, left),
            3 => self.values_item(),
            _ => self.function_item(left),
        }
    }

    /// A table (or a CTE) read by name, with an alias and an alias list now and then.
    fn table_ref(&mut self, env: &Env) -> (Sql, Vec<Rel>) {
        let weights: Vec<u32> = TABLES
            .iter()
            .map(|t| t.weight)
            .chain(env.ctes.iter().map(|_| 40 / env.ctes.len().max(1) as u32 + 1))
            .collect();
        let i = self.rng.weighted(&weights);
        let (name_sql, qual, columns, table) = if let Some(info) = TABLES.get(i) {
            let name_sql = self.table_name(info);
            // Written unqualified, a CTE of the same name wins over the table.
            let unqualified = !name_sql.render("db").contains('.');
            match env.cte(info.name) {
                Some(cols) if unqualified => (name_sql, info.name.to_owned(), cols.clone(), None),
                _ => {
                    let cols = info.columns.iter().map(|c| (*c).to_owned()).collect();
                    (name_sql, info.name.to_owned(), cols, Some((info.schema, info.name)))
                }
            }
        } else {
            let (name, cols) = env.ctes[i - TABLES.len()].clone();
            (self.name_variant(&name), name, cols, None)
        };
        let (alias_sql, rel) = self.alias(qual, columns, table);
        let sql = seq(vec![name_sql, alias_sql]);
        let sql = match TABLES.get(i).map(|t| t.schema) {
            _ if table.is_none() => sql,
            Some("pg_catalog" | "information_schema") => tag("catalog table", sql),
            Some("other") => tag("table of another schema", sql),
            _ if TABLES.get(i).is_some_and(|t| t.name == "forbidden") => {
                tag("table outside the allowed list", sql)
            }
            _ => sql,
        };
        (sql, vec![rel])
    }

    /// An optional alias (and alias column list) for a relation.
    fn alias(
        &mut self,
        qual: String,
        columns: Vec<String>,
        table: Option<(&'static str, &'static str)>,
    ) -> (Sql, Rel) {
        if !self.rng.chance(45) {
            return (t(""), Rel { qual, columns, table });
        }
        let alias = (*self.rng.pick(ALIASES)).to_owned();
        let (list_sql, columns) = self.alias_list(columns, 25);
        let alias_sql = t(format!(" AS {alias}"));
        let alias_sql = if TABLES.iter().any(|t| t.name == alias) {
            tag("alias named like a table", alias_sql)
        } else {
            alias_sql
        };
        let sql = opt(seq(vec![alias_sql, list_sql]));
        (sql, Rel { qual: alias, columns, table: None })
    }

    /// Sometimes an alias column list renaming the first columns.
    fn alias_list(&mut self, columns: Vec<String>, percent: u32) -> (Sql, Vec<String>) {
        if columns.is_empty() || !self.rng.chance(percent) {
            return (t(""), columns);
        }
        let k = 1 + self.rng.below(columns.len());
        let names = self.distinct_names(k);
        let mut renamed = names.clone();
        renamed.extend(columns.into_iter().skip(k));
        (opt(tag("alias column list", t(format!("({})", names.join(", "))))), renamed)
    }

    fn distinct_names(&mut self, k: usize) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        while names.len() < k {
            let n = if names.len() >= COLUMN_NAMES.len() - 1 {
                format!("c{}", names.len())
            } else {
                (*self.rng.pick(COLUMN_NAMES)).to_owned()
            };
            if !names.contains(&n) && n != "current_role" {
                names.push(n);
            }
        }
        names
    }

    /// `[LATERAL] (query) AS alias[(names)]`.
    fn derived(&mut self, env: &Env, left: &[Rel]) -> (Sql, Vec<Rel>) {
        let lateral = !left.is_empty() && self.rng.chance(35);
        let inner_env = if lateral { env.with_outer(left) } else { env.clone() };
        let q = self.query(&inner_env, None);
        let alias = (*self.rng.pick(ALIASES)).to_owned();
        let (list_sql, columns) = self.alias_list(q.columns, 30);
        let sql = seq(vec![
            if lateral { opt(tag("LATERAL", t("LATERAL "))) } else { t("") },
            t("("),
            q.sql,
            t(format!(") AS {alias}")),
            list_sql,
        ]);
        let simpler = vec![t(format!("secrets AS {alias}")), t(format!("ok_tbl AS {alias}"))];
        (alt(tag("derived table", sql), simpler), vec![Rel { qual: alias, columns, table: None }])
    }

    /// Two FROM items joined, sometimes parenthesised with an alias.
    fn join(&mut self, env: &Env, left: &[Rel]) -> (Sql, Vec<Rel>) {
        self.qdepth += 1;
        let (l_sql, l_rels) = self.source(env, left);
        let mut seen = left.to_vec();
        seen.extend(l_rels.iter().cloned());
        let (r_sql, r_rels) = self.source(env, &seen);
        self.qdepth -= 1;
        let mut both = l_rels.clone();
        both.extend(r_rels.iter().cloned());
        let common: Vec<String> = l_rels
            .iter()
            .flat_map(|r| r.columns.clone())
            .filter(|c| r_rels.iter().any(|r| r.columns.contains(c)))
            .collect();
        let kind =
            *self.rng.pick(&[" JOIN ", " JOIN ", " LEFT JOIN ", " INNER JOIN ", " FULL JOIN "]);
        let (op, constraint) = match self.rng.weighted(&[50, 25, 12, 13]) {
            0 => {
                let p = self.predicate(env, &both);
                (kind, seq(vec![t(" ON "), p]))
            }
            1 if !common.is_empty() => {
                let c = self.rng.pick(&common).clone();
                (kind, tag("JOIN USING", t(format!(" USING ({c})"))))
            }
            2 => (" NATURAL JOIN ", tag("NATURAL JOIN", t(""))),
            _ => (" CROSS JOIN ", t("")),
        };
        let op = if matches!(&constraint, Sql::Text(c) if c.is_empty()) && op == kind {
            " CROSS JOIN "
        } else {
            op
        };
        let joined = seq(vec![l_sql.clone(), t(op), r_sql.clone(), constraint]);
        let simpler = vec![l_sql, r_sql];
        match self.rng.weighted(&[70, 20, 10]) {
            0 => (alt(joined, simpler), both),
            1 => {
                let alias = (*self.rng.pick(ALIASES)).to_owned();
                let mut columns: Vec<String> = Vec::new();
                for c in both.iter().flat_map(|r| r.columns.clone()) {
                    if !columns.contains(&c) {
                        columns.push(c);
                    }
                }
                let (list_sql, columns) = self.alias_list(columns, 30);
                let sql = seq(vec![t("("), joined, t(format!(") AS {alias}")), list_sql]);
                let sql = tag("join with an alias", sql);
                (alt(sql, simpler), vec![Rel { qual: alias, columns, table: None }])
            }
            _ => (alt(seq(vec![t("("), joined, t(")")]), simpler), both),
        }
    }

    fn values_item(&mut self) -> (Sql, Vec<Rel>) {
        let alias = (*self.rng.pick(ALIASES)).to_owned();
        let names = self.distinct_names(2);
        let sql = t(format!("(VALUES (1, 'v1'), (2, 'v2')) AS {alias}({})", names.join(", ")));
        (sql, vec![Rel { qual: alias, columns: names, table: None }])
    }

    /// A set-returning function; over a relation to the left, LATERAL.
    fn function_item(&mut self, left: &[Rel]) -> (Sql, Vec<Rel>) {
        let alias = (*self.rng.pick(ALIASES)).to_owned();
        if !left.is_empty() && self.rng.chance(60) {
            let r = self.rng.pick(left).clone();
            let q = r.qual.clone();
            let c = self.rng.pick(&r.columns).clone();
            let (call, columns): (String, Vec<&str>) = match self.rng.below(4) {
                0 => (format!("json_each_text(row_to_json({q}.*))"), vec!["key", "value"]),
                1 => (format!("jsonb_each_text(to_jsonb({q}))"), vec!["key", "value"]),
                2 => (format!("unnest(ARRAY[{q}.{c}::text])"), vec!["v"]),
                _ => (format!("json_array_elements_text(json_build_array({q}.*))"), vec!["value"]),
            };
            let list = if self.rng.chance(40) {
                format!("({})", columns.join(", "))
            } else {
                String::new()
            };
            let sql = tag(
                "set-returning function over a row",
                t(format!("LATERAL {call} AS {alias}{list}")),
            );
            let columns = columns.into_iter().map(str::to_owned).collect();
            let simpler = t(format!("generate_series(1, 2) AS {alias}(id)"));
            return (alt(sql, vec![simpler]), vec![Rel { qual: alias, columns, table: None }]);
        }
        let (call, column) = match self.rng.below(3) {
            0 => ("generate_series(1, 3)", "id"),
            1 => ("unnest(ARRAY['a', 'b'])", "name"),
            _ => ("string_to_table('a,b', ',')", "v"),
        };
        let sql = t(format!("{call} AS {alias}({column})"));
        (sql, vec![Rel { qual: alias, columns: vec![column.to_owned()], table: None }])
    }

    /// A table's name as written: qualified, quoted, upper case, with the
    /// database in front; the plain form is the simpler alternative.
    fn table_name(&mut self, info: &TableInfo) -> Sql {
        let (s, n) = (info.schema, info.name);
        let implicit = s == "public" || s == "pg_catalog";
        let plain = if implicit { n.to_owned() } else { format!("{s}.{n}") };
        let variant = match self.rng.weighted(&[45, 15, 8, 8, 3, 1, 3, 5]) {
            0 => t(plain.clone()),
            1 => t(format!("{s}.{n}")),
            2 if implicit => t(format!("\"{n}\"")),
            2 => t(format!("\"{s}\".\"{n}\"")),
            3 => t(plain.to_uppercase()),
            4 => t(capitalised(&plain)),
            5 => t(format!("\"{}\"", capitalised(n))),
            6 => tag("database-qualified table name", seq(vec![Sql::Db, t(format!(".{s}.{n}"))])),
            _ => t(format!("\"{s}\".\"{n}\"")),
        };
        alt(variant, vec![t(plain)])
    }

    /// A CTE's name as written: plain mostly, quoted or upper case sometimes.
    fn name_variant(&mut self, name: &str) -> Sql {
        let variant = match self.rng.weighted(&[80, 10, 10]) {
            0 => name.to_owned(),
            1 => format!("\"{name}\""),
            _ => name.to_uppercase(),
        };
        alt(t(variant), vec![t(name.to_owned())])
    }

    /// A qualifier as written (plain, quoted, upper case).
    fn qualifier(&mut self, qual: &str) -> Sql {
        let variant = match self.rng.weighted(&[85, 8, 7]) {
            0 => qual.to_owned(),
            1 => format!("\"{qual}\""),
            _ => qual.to_uppercase(),
        };
        alt(t(variant), vec![t(qual.to_owned())])
    }

    /// A column reference and its name: unqualified, qualified, with three
    /// or four parts; from this query, an outer one, or made up.
    fn column_ref(&mut self, env: &Env, rels: &[Rel]) -> (Sql, String) {
        let use_outer = !env.outer.is_empty() && (rels.is_empty() || self.rng.chance(15));
        let pool: Vec<&Rel> = if use_outer { env.outer.iter() } else { rels.iter() }
            .filter(|r| r.columns.iter().any(|c| c != NO_NAME))
            .collect();
        if pool.is_empty() || self.rng.chance(3) {
            let c = (*self.rng.pick(COLUMN_NAMES)).to_owned();
            if pool.is_empty() || self.rng.chance(50) {
                return (t(c.clone()), c);
            }
            let q = self.rng.pick(&pool).qual.clone();
            return (t(format!("{q}.{c}")), c);
        }
        let r = (*self.rng.pick(&pool)).clone();
        let named: Vec<&String> = r.columns.iter().filter(|c| *c != NO_NAME).collect();
        let c = (*self.rng.pick(&named)).clone();
        let plain = t(format!("{}.{c}", r.qual));
        let sql = match (self.rng.weighted(&[30, 45, 8, 9, 8]), r.table) {
            (0, _) => t(c.clone()),
            (2, Some((s, n))) => tag("three-part column name", t(format!("{s}.{n}.{c}"))),
            (3, Some((s, n))) => {
                tag("four-part column name", seq(vec![Sql::Db, t(format!(".{s}.{n}.{c}"))]))
            }
            (4, _) => {
                let q = self.qualifier(&r.qual);
                seq(vec![q, t(format!(".{c}"))])
            }
            _ => plain.clone(),
        };
        (alt(sql, vec![plain]), c)
    }

    /// An expression and the name PostgreSQL gives its column (roughly).
    fn expr(&mut self, env: &Env, rels: &[Rel]) -> (Sql, String) {
        self.edepth += 1;
        let deep = self.edepth > MAX_EXPR_DEPTH;
        let weights: &[u32] =
            if deep { &[60, 6, 10, 4, 4] } else { &[55, 6, 10, 4, 4, 10, 3, 2, 4, 1, 1] };
        let out = match self.rng.weighted(weights) {
            0 => self.column_ref(env, rels),
            1 => {
                let v = *self.rng.pick(&["1", "'x'", "NULL", "42", "'CANARY'", "true"]);
                (t(v), NO_NAME.to_owned())
            }
            2 => self.whole_row(env, rels),
            3 => {
                let k = *self.rng.pick(SESSION);
                let name = k.trim_end_matches("()").to_lowercase();
                (tag("session keyword", t(k)), name)
            }
            4 => self.catalog_probe(env, rels),
            5 => {
                let (x, name) = self.expr(env, rels);
                let (pre, post, fname): (&str, &str, Option<&str>) = *self.rng.pick(&[
                    ("lower(", "::text)", Some("lower")),
                    ("upper(", "::text)", Some("upper")),
                    ("length(", "::text)", Some("length")),
                    ("md5(", "::text)", Some("md5")),
                    ("substr(", "::text, 1, 80)", Some("substr")),
                    ("coalesce(", "::text, 'n')", Some("coalesce")),
                    ("", "::text", None),
                    ("CAST(", " AS text)", None),
                    ("(", ")", None),
                    ("", "::text || ''", Some(NO_NAME)),
                    ("reverse(", "::text)", Some("reverse")),
                    ("to_json(", ")", Some("to_json")),
                    ("", "::varchar", None),
                    ("concat(", ", '')", Some("concat")),
                    ("format('%s', ", ")", Some("format")),
                ]);
                let sql = seq(vec![t(pre), x.clone(), t(post)]);
                (alt(sql, vec![x]), fname.map_or(name, str::to_owned))
            }
            6 => {
                let q = self.query(&env.with_outer(rels), Some(1));
                let sql = tag("subquery", seq(vec![t("("), q.sql, t(")")]));
                let name = q.columns.first().cloned().unwrap_or_default();
                (alt(sql, vec![t("NULL")]), name)
            }
            7 => {
                let p = self.predicate(env, rels);
                let (x, name) = self.expr(env, rels);
                let (y, _) = self.expr(env, rels);
                let sql = seq(vec![
                    t("CASE WHEN "),
                    p,
                    t(" THEN "),
                    x.clone(),
                    t("::text ELSE "),
                    y.clone(),
                    t("::text END"),
                ]);
                (alt(sql, vec![x, y]), name)
            }
            8 => self.field_access(env, rels),
            9 => {
                let q = self.query(&env.with_outer(rels), Some(1));
                let sql = tag("subquery", seq(vec![t("ARRAY("), q.sql, t(")")]));
                (alt(sql, vec![t("NULL")]), "array".to_owned())
            }
            _ => {
                let p = self.predicate(env, rels);
                (seq(vec![t("("), p, t(")")]), NO_NAME.to_owned())
            }
        };
        self.edepth -= 1;
        out
    }

    /// A whole-row reference: `t`, `t.*`, inside a function or a cast.
    fn whole_row(&mut self, env: &Env, rels: &[Rel]) -> (Sql, String) {
        let pool: Vec<&Rel> = rels.iter().chain(&env.outer).collect();
        let q = if pool.is_empty() || self.rng.chance(3) {
            (*self.rng.pick(ALIASES)).to_owned()
        } else {
            self.rng.pick(&pool).qual.clone()
        };
        let (sql, name): (String, &str) = match self.rng.below(13) {
            0 => (q.clone(), "?"),
            1 => (format!("to_json({q})"), "to_json"),
            2 => (format!("row_to_json({q}.*)"), "row_to_json"),
            3 => (format!("({q}.*)::text"), "?"),
            4 => (format!("CAST({q} AS text)"), "?"),
            5 => (format!("concat({q}.*)"), "concat"),
            6 => (format!("format('%s', {q})"), "format"),
            7 => (format!("to_jsonb({q}.*)"), "to_jsonb"),
            8 => (format!("json_build_array({q}.*)"), "json_build_array"),
            9 => (format!("ROW({q}.*)::text"), "row"),
            10 => (format!("md5({q}::text)"), "md5"),
            11 => (format!("{q}::text"), "?"),
            _ => (format!("concat_ws(',', {q}.*)"), "concat_ws"),
        };
        let name = if name == "?" { q.clone() } else { name.to_owned() };
        (alt(tag("whole row", t(sql)), vec![t("1")]), name)
    }

    /// A field of a whole row, or of its JSON.
    fn field_access(&mut self, env: &Env, rels: &[Rel]) -> (Sql, String) {
        let pool: Vec<&Rel> = rels.iter().chain(&env.outer).collect();
        if pool.is_empty() {
            return (t("1"), NO_NAME.to_owned());
        }
        let r = self.rng.pick(&pool);
        let q = r.qual.clone();
        let c = if self.rng.chance(70) {
            "secret".to_owned()
        } else {
            let named: Vec<&String> = r.columns.iter().filter(|c| *c != NO_NAME).collect();
            if named.is_empty() { "id".to_owned() } else { (*self.rng.pick(&named)).clone() }
        };
        let sql = match self.rng.below(5) {
            0 => format!("({q}).{c}"),
            1 => format!("({q}.*).{c}"),
            2 => format!("to_json({q})->>'{c}'"),
            3 => format!("row_to_json({q}.*)->>'{c}'"),
            _ => format!("to_jsonb({q}) ->> '{c}'"),
        };
        (alt(tag("field of a whole row", t(sql)), vec![t("1")]), c)
    }

    /// A read of the catalogs through a cast or a function: `::regclass`
    /// and friends over oids near the test tables', comments, settings.
    fn catalog_probe(&mut self, env: &Env, rels: &[Rel]) -> (Sql, String) {
        let k = self.rng.below(80) as i64 - 20;
        let near = if k >= 0 {
            format!("('ok_tbl'::regclass::oid::int8 + {k})::oid")
        } else {
            format!("('public.ok_tbl'::regclass::oid::int8 - {})::oid", -k)
        };
        let cast = *self.rng.pick(&["regclass", "regrole", "regtype", "regnamespace"]);
        let sql = match self.rng.below(20) {
            // Every oid around the test tables' at once: whatever exists near
            // them (the role, the other schema's objects) shows by name.
            16..=19 => format!(
                "(SELECT string_agg(('ok_tbl'::regclass::oid::int8 + g.n)::oid::{cast}::text, ',') \
                 FROM generate_series(-10, 60) AS g(n))"
            ),
            0 => "'forbidden'::regclass::text".to_owned(),
            1 => "'other.stuff'::regclass::oid".to_owned(),
            2 => format!("{near}::regclass::text"),
            3 => format!("{near}::regrole::text"),
            4 => format!("{near}::regtype::text"),
            5 => format!("{near}::regnamespace::text"),
            6 => format!("CAST({near} AS regclass)::text"),
            7 => "to_regclass('other.stuff')::text".to_owned(),
            8 => "obj_description('forbidden'::regclass)".to_owned(),
            9 => format!("obj_description({near}, 'pg_class')"),
            10 => "col_description('secrets'::regclass, 3)".to_owned(),
            11 => "current_setting('custard.canary')".to_owned(),
            12 => "current_setting('custard.canary', true)".to_owned(),
            13 => {
                let (x, _) = self.column_ref(env, rels);
                let sql =
                    tag("catalog cast or function", seq(vec![t("pg_typeof("), x, t(")::text")]));
                return (sql, "pg_typeof".to_owned());
            }
            14 => format!("{near}::regclass::oid"),
            _ => format!("quote_ident({near}::regclass::text)"),
        };
        (alt(tag("catalog cast or function", t(sql)), vec![t("1")]), NO_NAME.to_owned())
    }

    /// A condition: on values that differ between the two canary variants
    /// (NULL, length, order, a pattern), on subqueries, or combined.
    fn predicate(&mut self, env: &Env, rels: &[Rel]) -> Sql {
        self.edepth += 1;
        let deep = self.edepth > MAX_EXPR_DEPTH;
        let weights: &[u32] =
            if deep { &[14, 14, 8, 6, 12, 4] } else { &[14, 14, 8, 6, 12, 4, 5, 6, 2, 6] };
        let p = match self.rng.weighted(weights) {
            0 => {
                let (x, _) = self.expr(env, rels);
                let test = if self.rng.chance(50) { " IS NULL" } else { " IS NOT NULL" };
                seq(vec![x, t(test)])
            }
            1 => {
                let (x, _) = self.expr(env, rels);
                let pattern = *self.rng.pick(&["'CANARY%'", "'%long%'", "'%-1%'", "'%MASK%'"]);
                seq(vec![x, t(format!("::text LIKE {pattern}"))])
            }
            2 => {
                let (x, _) = self.expr(env, rels);
                seq(vec![t("length("), x, t("::text) > 26")])
            }
            3 => {
                let (x, _) = self.expr(env, rels);
                seq(vec![x, t("::text > 'CANARY-MASK-m'")])
            }
            4 => {
                let (x, _) = self.expr(env, rels);
                let (y, _) = self.expr(env, rels);
                seq(vec![x, t("::text = "), y, t("::text")])
            }
            5 => t(*self.rng.pick(&["true", "false", "1 = 1"])),
            6 => {
                let (x, _) = self.expr(env, rels);
                let q = self.query(&env.with_outer(rels), Some(1));
                let sub = seq(vec![t("(SELECT v::text FROM ("), q.sql, t(") AS i(v))")]);
                seq(vec![x, t("::text IN "), tag("subquery", sub)])
            }
            7 => {
                let q = self.query(&env.with_outer(rels), None);
                let not = if self.rng.chance(25) { "NOT " } else { "" };
                tag("subquery", seq(vec![t(format!("{not}EXISTS (")), q.sql, t(")")]))
            }
            8 => {
                let inner = self.predicate(env, rels);
                seq(vec![t("NOT ("), inner, t(")")])
            }
            _ => {
                let a = self.predicate(env, rels);
                let b = self.predicate(env, rels);
                let op = if self.rng.chance(60) { " AND " } else { " OR " };
                alt(seq(vec![t("("), a.clone(), t(op), b.clone(), t(")")]), vec![a, b])
            }
        };
        self.edepth -= 1;
        alt(p, vec![t("true")])
    }
}

fn capitalised(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    if let Some(first) = chars.next() {
        out.extend(first.to_uppercase());
    }
    out.extend(chars);
    out
}

/// Renders queries for a report: one per line, numbered.
pub(crate) fn listing(queries: &[Sql], db: &str) -> String {
    let mut out = String::new();
    for (i, q) in queries.iter().enumerate() {
        let _ = writeln!(out, "{i:>3}: {}", q.render(db));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DB: &str = "db";

    #[test]
    fn the_same_seed_gives_the_same_queries() {
        let a: Vec<String> = {
            let mut g = Gen::new(9);
            (0..50).map(|_| g.query_tree().render("db")).collect()
        };
        let mut g = Gen::new(9);
        let b: Vec<String> = (0..50).map(|_| g.query_tree().render("db")).collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|q| !q.is_empty()));
    }

    #[test]
    fn minimising_with_an_oracle_that_always_agrees_ends_small() {
        let mut g = Gen::new(3);
        for _ in 0..50 {
            let mut q = g.query_tree();
            let mut rounds = 0;
            while let Some((_, smaller)) = q.shorter(DB).into_iter().next() {
                q = smaller;
                rounds += 1;
                assert!(rounds < 10_000);
            }
            assert!(q.render(DB).len() < 100, "{}", q.render(DB));
        }
    }
}
