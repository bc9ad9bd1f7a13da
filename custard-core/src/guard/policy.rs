//! The read-only policy: parse, walk every node, then resolve names.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};

use sqlparser::ast::{
    AccessExpr, BinaryOperator, DataType, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArguments, Ident, JoinConstraint, JoinOperator, ObjectName, ObjectNamePart, Query,
    Select, SetExpr, Statement, TableAlias, TableFactor, Value, Visit, Visitor,
};
use sqlparser::dialect::{PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use super::names::fold;
use super::{CheckedSql, GuardInner, Rejection, RejectionCode, functions, scope};
use crate::Dialect;

/// The alias given to the wrapped query when the guard adds a row limit.
const WRAP_ALIAS: &str = "custard_result";

/// Checks `sql` under `g`'s policy, limiting it to `max_rows` rows (`None`: no limit).
pub(super) fn check(
    g: &GuardInner,
    sql: &str,
    max_rows: Option<u64>,
) -> Result<CheckedSql, Rejection> {
    if sql.len() > g.max_sql_bytes {
        return Err(Rejection::new(
            RejectionCode::TooLong,
            format!("SQL is {} bytes long; the limit is {} bytes", sql.len(), g.max_sql_bytes),
        ));
    }
    // Parsed with room for the row-limit wrapper, so that the wrapped text is
    // known to parse too (see `reads_back`); only a query that needs that room
    // is parsed again, at the full depth.
    let (mut statements, depth) = match parse_within(g, sql, wrapped_depth(g)) {
        Err(Failure::TooDeep) => (parse(g, sql)?, g.recursion_limit),
        parsed => (parsed.map_err(|f| f.rejection(g))?, wrapped_depth(g)),
    };
    let statement = match statements.len() {
        0 => return Err(Rejection::new(RejectionCode::Empty, "no SQL statement was given")),
        1 => statements.remove(0),
        n => {
            return Err(Rejection::new(
                RejectionCode::MultipleStatements,
                format!("exactly one statement may run, but {n} were given"),
            ));
        }
    };
    let query = match statement {
        Statement::Query(query) => query,
        other => return Err(statement_rejection(&other)),
    };
    // SQL this guard wrapped in its row limit (what an agent receives from a
    // server older than the plain `run`) is checked as the query inside,
    // keeping the tighter limit, so it is wrapped once, not twice.
    let (query, wrapped_limit) = match unwrap_row_limit(g, &query) {
        Some((inner, limit)) => (inner, Some(limit)),
        None => (query, None),
    };
    let mut walker = Walker::new(g);
    if let ControlFlow::Break(rejection) = query.visit(&mut walker) {
        return Err(rejection);
    }
    let bound = scope::bind(g, &query)?;
    if bound.names != walker.names {
        // Some part of the tree holds names the binder did not resolve: fail closed.
        return Err(Rejection::new(
            RejectionCode::Unsupported,
            "the guard could not resolve every name in this query; write it more simply",
        ));
    }
    let tables = bound.tables;
    let max_rows = match (max_rows, wrapped_limit) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let printed = query.to_string();
    let (wrapped, row_limit) = limit(max_rows, &query, &printed);
    // Text already in its printed form reads back as itself: the parser is a
    // function of the text (a server's checked query, as an agent receives it).
    let reprinted = printed != sql || wrapped_limit.is_some();
    reads_back(g, &printed, &query, &wrapped, reprinted, depth)?;
    Ok(CheckedSql {
        query: printed,
        sql: wrapped,
        dialect: g.dialect,
        row_limit,
        tables,
        search_path: g.search_path.clone(),
    })
}

/// What runs is the checked tree printed back, so the printed text must mean
/// exactly that tree: sqlparser prints some string literals (an escaped quote
/// inside) in a way that reads back as different SQL, and SQL near the depth
/// limit can pass alone but not inside the row-limit wrapper. Either way the
/// text is refused rather than run with a meaning the guard did not check.
///
/// `depth` is the nesting the query was parsed within, and `printed` is read
/// back within it unless `reparse` is false (it is the checked text itself).
/// A query that parsed with room for the wrapper ([`WRAP_DEPTH`] levels)
/// parses wrapped at the full depth (a test holds the parser to that), so
/// the wrapped text is parsed again only otherwise.
fn reads_back(
    g: &GuardInner,
    printed: &str,
    query: &Query,
    sql: &str,
    reparse: bool,
    depth: usize,
) -> Result<(), Rejection> {
    if reparse {
        let same = match parse_within(g, printed, depth).map_err(|f| f.rejection(g))?.as_slice() {
            [Statement::Query(again)] => **again == *query,
            _ => false,
        };
        if !same {
            return Err(Rejection::new(
                RejectionCode::Unsupported,
                "this SQL does not read back the same once normalised (check the quoting of its \
                 string literals); write it without backslashes or doubled quotes inside strings",
            ));
        }
    }
    if sql.len() > g.max_sql_bytes {
        return Err(Rejection::new(
            RejectionCode::TooLong,
            format!(
                "SQL is {} bytes long once wrapped in the row limit; the limit is {} bytes",
                sql.len(),
                g.max_sql_bytes
            ),
        ));
    }
    if sql != printed && depth > wrapped_depth(g) {
        parse(g, sql).map_err(|r| {
            Rejection::new(r.code, format!("{} once wrapped in the row limit", r.message))
        })?;
    }
    Ok(())
}

/// How many levels of the parser's depth the row-limit wrapper takes
/// (`SELECT * FROM (<query>) AS custard_result LIMIT n`).
pub(super) const WRAP_DEPTH: usize = 2;

/// The depth a query may use and still parse inside the row-limit wrapper.
fn wrapped_depth(g: &GuardInner) -> usize {
    g.recursion_limit.saturating_sub(WRAP_DEPTH)
}

/// The query inside this guard's own row-limit wrapper
/// (`SELECT * FROM (<query>) AS custard_result LIMIT n`) and the rows it
/// allows (`n - 1`), when `query` is exactly that wrapper.
fn unwrap_row_limit(g: &GuardInner, query: &Query) -> Option<(Box<Query>, u64)> {
    let SetExpr::Select(select) = query.body.as_ref() else { return None };
    let [from] = select.from.as_slice() else { return None };
    let TableFactor::Derived { subquery, alias: Some(alias), .. } = &from.relation else {
        return None;
    };
    if alias.name.value != WRAP_ALIAS {
        return None;
    }
    let n = literal_limit(query)?;
    let allowed = n.checked_sub(1)?;
    // Exactly the wrapper, nothing more: rebuilt from its parts, it must be equal.
    let rebuilt = format!("SELECT * FROM ({subquery}) AS {WRAP_ALIAS} LIMIT {n}");
    match parse(g, &rebuilt).ok()?.as_slice() {
        [Statement::Query(again)] if **again == *query => Some((subquery.clone(), allowed)),
        _ => None,
    }
}

/// The most set operations (`UNION`, `INTERSECT`, `EXCEPT`) one statement may
/// chain, and the most binary operators. The parser builds such chains in a
/// loop, so the recursion limit does not see them, but they become trees as
/// deep as they are long, which walking, printing, comparing and dropping
/// recurse into: unbounded, a long chain would overflow a worker's stack.
const MAX_SET_OPERATIONS: usize = 64;
const MAX_BINARY_OPERATORS: usize = 512;

fn parse(g: &GuardInner, sql: &str) -> Result<Vec<Statement>, Rejection> {
    parse_within(g, sql, g.recursion_limit).map_err(|f| f.rejection(g))
}

/// Why parsing failed: too deep for the depth asked, or any other reason.
enum Failure {
    TooDeep,
    Rejected(Rejection),
}

impl Failure {
    fn rejection(self, g: &GuardInner) -> Rejection {
        match self {
            Failure::TooDeep => parse_rejection(g, ParserError::RecursionLimitExceeded),
            Failure::Rejected(r) => r,
        }
    }
}

/// Parses `sql` allowing at most `depth` levels of nesting.
fn parse_within(g: &GuardInner, sql: &str, depth: usize) -> Result<Vec<Statement>, Failure> {
    let run = || -> Result<Vec<Statement>, Failure> {
        let dialect: &dyn sqlparser::dialect::Dialect = match g.dialect {
            Dialect::Postgres => &PostgreSqlDialect {},
            Dialect::Sqlite => &SQLiteDialect {},
        };
        let tokens = Tokenizer::new(dialect, sql).tokenize_with_location().map_err(|e| {
            Failure::Rejected(parse_rejection(g, ParserError::TokenizerError(e.to_string())))
        })?;
        let (set_operations, binary_operators) = chained_operators(&tokens);
        if set_operations > MAX_SET_OPERATIONS || binary_operators > MAX_BINARY_OPERATORS {
            return Err(Failure::Rejected(Rejection::new(
                RejectionCode::ParseError,
                format!(
                    "SQL chains {set_operations} set operations and {binary_operators} operators; \
                     the limits are {MAX_SET_OPERATIONS} and {MAX_BINARY_OPERATORS}"
                ),
            )));
        }
        Parser::new(dialect)
            .with_recursion_limit(depth)
            .with_tokens_with_locations(tokens)
            .parse_statements()
            .map_err(|e| match e {
                ParserError::RecursionLimitExceeded => Failure::TooDeep,
                e => Failure::Rejected(parse_rejection(g, e)),
            })
    };
    // The parser is not supposed to panic; if it ever does, fail closed with an error.
    catch_unwind(AssertUnwindSafe(run)).unwrap_or_else(|_| {
        Err(Failure::Rejected(Rejection::new(RejectionCode::ParseError, "could not parse SQL")))
    })
}

fn parse_rejection(g: &GuardInner, e: ParserError) -> Rejection {
    match e {
        ParserError::RecursionLimitExceeded => Rejection::new(
            RejectionCode::ParseError,
            format!("SQL nests more than {} levels deep", g.recursion_limit),
        ),
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => {
            Rejection::new(RejectionCode::ParseError, format!("could not parse SQL: {m}"))
        }
    }
}

/// Set-operation keywords and binary-operator tokens, counted over the whole
/// text (an upper bound on the longest chain of either).
fn chained_operators(tokens: &[TokenWithSpan]) -> (usize, usize) {
    use sqlparser::keywords::Keyword;
    let mut counts = (0, 0);
    for token in tokens {
        match &token.token {
            Token::Word(w)
                if matches!(w.keyword, Keyword::UNION | Keyword::INTERSECT | Keyword::EXCEPT) =>
            {
                counts.0 += 1;
            }
            Token::Word(w) if matches!(w.keyword, Keyword::AND | Keyword::OR) => counts.1 += 1,
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::StringConcat
            | Token::Eq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Caret
            | Token::Ampersand
            | Token::Pipe
            | Token::ShiftLeft
            | Token::ShiftRight
            | Token::DoubleColon
            | Token::Arrow
            | Token::LongArrow
            | Token::HashArrow
            | Token::HashLongArrow => counts.1 += 1,
            _ => {}
        }
    }
    counts
}

/// The rejection for a statement that is not a plain query.
fn statement_rejection(statement: &Statement) -> Rejection {
    let keyword = statement.to_string();
    let keyword: Vec<&str> = keyword.split_whitespace().take(2).collect();
    let keyword = keyword.join(" ").to_uppercase();
    match statement {
        Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Merge(_) => Rejection::new(
            RejectionCode::DataModifying,
            format!("`{keyword}` modifies data; only read-only queries may run"),
        ),
        _ => Rejection::new(
            RejectionCode::NotAQuery,
            format!(
                "`{keyword}` is not a query; only SELECT, WITH, VALUES and TABLE statements may run"
            ),
        ),
    }
}

/// Walks the whole AST for what does not depend on names: statements, locking,
/// functions, types, syntax from other dialects. It also counts the name nodes
/// (column references, whole-row references, FROM items), which the binder
/// must resolve one for one.
struct Walker<'g> {
    g: &'g GuardInner,
    names: usize,
    /// Field names after a `.` in `(x).f`, which are not column references.
    fields: HashSet<*const Expr>,
}

impl<'g> Walker<'g> {
    fn new(g: &'g GuardInner) -> Self {
        Walker { g, names: 0, fields: HashSet::new() }
    }

    fn fold(&self, ident: &Ident) -> String {
        fold(self.g.dialect, ident)
    }

    fn unsupported(what: &str) -> ControlFlow<Rejection> {
        ControlFlow::Break(Rejection::new(
            RejectionCode::Unsupported,
            format!("{what} is not supported in read-only queries"),
        ))
    }

    /// Checks a function name against the allow-list; `pg_catalog.` is the only qualifier allowed.
    fn check_function_name(&mut self, name: &ObjectName) -> ControlFlow<Rejection> {
        let parts = idents(name);
        let Some(parts) = parts else { return Self::unsupported("a computed function name") };
        let allowed_qualifier = match parts.as_slice() {
            [_] => true,
            [schema, _] => self.g.dialect == Dialect::Postgres && self.fold(schema) == "pg_catalog",
            _ => false,
        };
        let Some(last) = parts.last() else { return Self::unsupported("an empty function name") };
        let base = self.fold(last);
        if allowed_qualifier && functions::is_allowed(self.g.dialect, &base) {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(Rejection::new(
                RejectionCode::FunctionNotAllowed,
                format!("function `{name}` is not allowed in read-only queries"),
            ))
        }
    }

    fn check_function(&mut self, f: &Function) -> ControlFlow<Rejection> {
        if !matches!(f.parameters, FunctionArguments::None) {
            return Self::unsupported("a parameterised function");
        }
        self.check_function_name(&f.name)?;
        if let FunctionArguments::List(list) = &f.args {
            self.count_wildcard_args(&list.args);
        }
        ControlFlow::Continue(())
    }

    /// `t.*` as a function argument reads t's whole row: a name node.
    fn count_wildcard_args(&mut self, args: &[FunctionArg]) {
        for arg in args {
            let (FunctionArg::Named { arg, .. }
            | FunctionArg::ExprNamed { arg, .. }
            | FunctionArg::Unnamed(arg)) = arg;
            if matches!(arg, FunctionArgExpr::QualifiedWildcard(_)) {
                self.names += 1;
            }
        }
    }

    fn check_alias_types(alias: Option<&TableAlias>, d: Dialect) -> ControlFlow<Rejection> {
        for column in alias.map(|a| a.columns.as_slice()).unwrap_or_default() {
            if let Some(t) = &column.data_type
                && let Err(r) = check_type(d, t)
            {
                return ControlFlow::Break(r);
            }
        }
        ControlFlow::Continue(())
    }
}

/// SQL keywords the dialect reads as functions without parentheses, which
/// sqlparser leaves as plain identifiers when unquoted (PostgreSQL's
/// `current_role`, `current_schema`): they follow the function allow-list,
/// not column rules. SQLite has only the three date and time keywords.
pub(super) fn is_session_keyword(dialect: Dialect, ident: &Ident) -> bool {
    const POSTGRES: [&str; 12] = [
        "current_catalog",
        "current_date",
        "current_role",
        "current_schema",
        "current_time",
        "current_timestamp",
        "current_user",
        "localtime",
        "localtimestamp",
        "session_user",
        "system_user",
        "user",
    ];
    const SQLITE: [&str; 3] = ["current_date", "current_time", "current_timestamp"];
    let keywords: &[&str] = match dialect {
        Dialect::Postgres => &POSTGRES,
        Dialect::Sqlite => &SQLITE,
    };
    ident.quote_style.is_none() && keywords.contains(&ident.value.to_lowercase().as_str())
}

/// Casts are allowed to plain value types only: `oid` and the `reg*` types
/// turn numbers and strings into catalog lookups (relations, roles and
/// functions outside the grants and the policy), so they are refused.
pub(super) fn check_type(d: Dialect, t: &DataType) -> Result<(), Rejection> {
    use sqlparser::ast::ArrayElemTypeDef;
    if d != Dialect::Postgres {
        // SQLite's type names only pick an affinity.
        return Ok(());
    }
    let ok = match t {
        DataType::Character(_)
        | DataType::Char(_)
        | DataType::CharacterVarying(_)
        | DataType::CharVarying(_)
        | DataType::Varchar(_)
        | DataType::Text
        | DataType::Uuid
        | DataType::Numeric(_)
        | DataType::Decimal(_)
        | DataType::Dec(_)
        | DataType::Float(_)
        | DataType::Float4
        | DataType::Float8
        | DataType::Real
        | DataType::Double(_)
        | DataType::DoublePrecision
        | DataType::SmallInt(_)
        | DataType::Int2(_)
        | DataType::Int(_)
        | DataType::Int4(_)
        | DataType::Integer(_)
        | DataType::Int8(_)
        | DataType::BigInt(_)
        | DataType::Bool
        | DataType::Boolean
        | DataType::Date
        | DataType::Time(..)
        | DataType::Timestamp(..)
        | DataType::Interval { .. }
        | DataType::JSON
        | DataType::JSONB
        | DataType::Bytea
        | DataType::Bit(_)
        | DataType::BitVarying(_)
        | DataType::VarBit(_) => true,
        DataType::Array(
            ArrayElemTypeDef::SquareBracket(inner, _)
            | ArrayElemTypeDef::AngleBracket(inner)
            | ArrayElemTypeDef::Parenthesis(inner),
        ) => return check_type(d, inner),
        DataType::Custom(name, _) => match idents(name).as_deref() {
            Some([one]) | Some([_, one]) => {
                let qualified_ok = match idents(name).as_deref() {
                    Some([schema, _]) => fold(d, schema) == "pg_catalog",
                    _ => true,
                };
                qualified_ok
                    && one.quote_style.is_none()
                    && PLAIN_TYPES.contains(&one.value.to_lowercase().as_str())
            }
            _ => false,
        },
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Rejection::new(
            RejectionCode::Unsupported,
            format!(
                "a cast to `{t}` is not supported in read-only queries (it can look up catalog objects)"
            ),
        ))
    }
}

/// PostgreSQL type names sqlparser leaves as custom names, all plain values.
const PLAIN_TYPES: [&str; 12] = [
    "bpchar",
    "cidr",
    "citext",
    "inet",
    "int2",
    "int4",
    "int8",
    "macaddr",
    "money",
    "timestamptz",
    "timetz",
    "xml",
];

/// The constraint of the usual join operators.
pub(super) fn join_constraint(op: &JoinOperator) -> Option<&JoinConstraint> {
    match op {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c)
        | JoinOperator::Right(c)
        | JoinOperator::RightOuter(c)
        | JoinOperator::FullOuter(c)
        | JoinOperator::CrossJoin(c)
        | JoinOperator::Semi(c)
        | JoinOperator::LeftSemi(c)
        | JoinOperator::RightSemi(c)
        | JoinOperator::Anti(c)
        | JoinOperator::LeftAnti(c)
        | JoinOperator::RightAnti(c) => Some(c),
        _ => None,
    }
}

/// The identifier parts of a name, or `None` when a part is computed.
pub(super) fn idents(name: &ObjectName) -> Option<Vec<&Ident>> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => Some(i),
            _ => None,
        })
        .collect()
}

impl Visitor for Walker<'_> {
    type Break = Rejection;

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<Rejection> {
        // The walk starts at the query, so any statement met is nested inside it.
        match statement {
            Statement::Query(_) => ControlFlow::Continue(()),
            Statement::Insert(_)
            | Statement::Update(_)
            | Statement::Delete(_)
            | Statement::Merge(_) => ControlFlow::Break(Rejection::new(
                RejectionCode::DataModifying,
                "a data-modifying statement inside a query (for example in a WITH clause) is not allowed",
            )),
            other => ControlFlow::Break(statement_rejection(other)),
        }
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Rejection> {
        if let Some(lock) = query.locks.first() {
            return ControlFlow::Break(Rejection::new(
                RejectionCode::Locking,
                format!("the locking clause `{lock}` is not allowed in read-only queries"),
            ));
        }
        if query.for_clause.is_some() {
            return Self::unsupported("a FOR XML/JSON clause");
        }
        if query.settings.is_some()
            || query.format_clause.is_some()
            || !query.pipe_operators.is_empty()
        {
            return Self::unsupported("this query clause");
        }
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                if cte.from.is_some() {
                    return Self::unsupported("a CTE with FROM");
                }
                Self::check_alias_types(Some(&cte.alias), self.g.dialect)?;
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<Rejection> {
        if let Some(into) = &select.into {
            return ControlFlow::Break(Rejection::new(
                RejectionCode::DataModifying,
                format!("`{into}` creates a table; only read-only queries may run"),
            ));
        }
        if select.top.is_some()
            || !select.lateral_views.is_empty()
            || select.prewhere.is_some()
            || !select.connect_by.is_empty()
            || !select.cluster_by.is_empty()
            || !select.distribute_by.is_empty()
            || !select.sort_by.is_empty()
            || select.qualify.is_some()
            || select.value_table_mode.is_some()
            || select.exclude.is_some()
        {
            return Self::unsupported("a clause from another SQL dialect");
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<Rejection> {
        self.names += 1;
        match factor {
            TableFactor::Table {
                name,
                alias,
                args,
                with_hints,
                version,
                partitions,
                json_path,
                index_directives,
                ..
            } => {
                if !with_hints.is_empty()
                    || version.is_some()
                    || !partitions.is_empty()
                    || json_path.is_some()
                    || !index_directives.is_empty()
                {
                    return Self::unsupported("a table hint from another SQL dialect");
                }
                Self::check_alias_types(alias.as_ref(), self.g.dialect)?;
                match args {
                    Some(args) => {
                        if args.settings.is_some() {
                            return Self::unsupported("table function settings");
                        }
                        self.count_wildcard_args(&args.args);
                        self.check_function_name(name)
                    }
                    None => ControlFlow::Continue(()),
                }
            }
            TableFactor::Function { name, alias, args, .. } => {
                Self::check_alias_types(alias.as_ref(), self.g.dialect)?;
                self.count_wildcard_args(args);
                self.check_function_name(name)
            }
            TableFactor::Derived { alias, .. }
            | TableFactor::UNNEST { alias, .. }
            | TableFactor::NestedJoin { alias, .. } => {
                Self::check_alias_types(alias.as_ref(), self.g.dialect)
            }
            _ => Self::unsupported("this kind of FROM item"),
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<Rejection> {
        match expr {
            Expr::Identifier(ident) if is_session_keyword(self.g.dialect, ident) => {
                // `current_role`, `current_schema`: functions in all but name.
                let name = ObjectName::from(vec![ident.clone()]);
                self.check_function_name(&name)
            }
            Expr::Identifier(_) => {
                if !self.fields.contains(&(expr as *const Expr)) {
                    self.names += 1;
                }
                ControlFlow::Continue(())
            }
            Expr::CompoundIdentifier(_) | Expr::QualifiedWildcard(..) => {
                self.names += 1;
                ControlFlow::Continue(())
            }
            Expr::CompoundFieldAccess { access_chain, .. } => {
                for access in access_chain {
                    if let AccessExpr::Dot(field @ Expr::Identifier(_)) = access {
                        self.fields.insert(field as *const Expr);
                    }
                }
                ControlFlow::Continue(())
            }
            Expr::Function(f) => self.check_function(f),
            Expr::Cast { data_type, .. } => match check_type(self.g.dialect, data_type) {
                Ok(()) => ControlFlow::Continue(()),
                Err(r) => ControlFlow::Break(r),
            },
            Expr::TypedString(typed) => match check_type(self.g.dialect, &typed.data_type) {
                Ok(()) => ControlFlow::Continue(()),
                Err(r) => ControlFlow::Break(r),
            },
            Expr::BinaryOp { op: BinaryOperator::PGCustomBinaryOperator(_), .. } => {
                ControlFlow::Break(Rejection::new(
                    RejectionCode::FunctionNotAllowed,
                    "OPERATOR(...) calls are not allowed in read-only queries",
                ))
            }
            Expr::Value(v) if matches!(v.value, Value::Placeholder(_)) => {
                Self::unsupported("a query parameter placeholder")
            }
            Expr::JsonAccess { .. }
            | Expr::IsFalse(_)
            | Expr::IsNotFalse(_)
            | Expr::IsTrue(_)
            | Expr::IsNotTrue(_)
            | Expr::IsNull(_)
            | Expr::IsNotNull(_)
            | Expr::IsUnknown(_)
            | Expr::IsNotUnknown(_)
            | Expr::IsDistinctFrom(..)
            | Expr::IsNotDistinctFrom(..)
            | Expr::IsNormalized { .. }
            | Expr::In { .. }
            | Expr::Between { .. }
            | Expr::BinaryOp { .. }
            | Expr::Like { .. }
            | Expr::ILike { .. }
            | Expr::SimilarTo { .. }
            | Expr::AnyOp { .. }
            | Expr::AllOp { .. }
            | Expr::UnaryOp { .. }
            | Expr::AtTimeZone { .. }
            | Expr::Extract { .. }
            | Expr::Ceil { .. }
            | Expr::Floor { .. }
            | Expr::Position { .. }
            | Expr::Substring { .. }
            | Expr::Trim { .. }
            | Expr::Overlay { .. }
            | Expr::Collate { .. }
            | Expr::Nested(_)
            | Expr::Value(_)
            | Expr::Case { .. }
            | Expr::Exists { .. }
            | Expr::Subquery(_)
            | Expr::GroupingSets(_)
            | Expr::Cube(_)
            | Expr::Rollup(_)
            | Expr::Tuple(_)
            | Expr::Array(_)
            | Expr::Interval(_)
            | Expr::Wildcard(_) => ControlFlow::Continue(()),
            _ => Self::unsupported("this kind of expression"),
        }
    }
}

/// Prints the checked query, wrapped in a row limit unless its own literal
/// `LIMIT` is already within bounds. Returns the SQL and the row limit.
/// The SQL that runs for `query` (printed as `printed`) under `max_rows`, and the row limit.
fn limit(max_rows: Option<u64>, query: &Query, printed: &str) -> (String, Option<u64>) {
    let Some(max) = max_rows else { return (printed.to_owned(), None) };
    if query.fetch.is_none() && literal_limit(query).is_some_and(|n| n <= max) {
        return (printed.to_owned(), Some(max));
    }
    // One row more than allowed, so the executor can tell that rows were left out.
    (
        format!("SELECT * FROM ({printed}) AS {WRAP_ALIAS} LIMIT {}", max.saturating_add(1)),
        Some(max),
    )
}

fn literal_limit(query: &Query) -> Option<u64> {
    use sqlparser::ast::LimitClause;
    match &query.limit_clause {
        Some(LimitClause::LimitOffset { limit: Some(Expr::Value(v)), limit_by, .. })
            if limit_by.is_empty() =>
        {
            match &v.value {
                Value::Number(n, _) => n.parse().ok(),
                _ => None,
            }
        }
        _ => None,
    }
}
