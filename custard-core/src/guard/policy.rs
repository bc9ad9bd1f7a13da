//! The read-only policy: parse, walk every node, then resolve names.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};

use sqlparser::ast::{
    BinaryOperator, Expr, Function, FunctionArguments, Ident, JoinConstraint, JoinOperator,
    ObjectName, ObjectNamePart, Query, Select, SelectItem, SelectItemQualifiedWildcardKind,
    SetExpr, Statement, TableAlias, TableFactor, Value, Visit, Visitor,
};
use sqlparser::dialect::{PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use super::names::{NameIndex, TableId, catalog_key, closest, fold};
use super::{CheckedSql, GuardInner, Rejection, RejectionCode, functions};
use crate::Dialect;

/// The alias given to the wrapped query when the guard adds a row limit.
const WRAP_ALIAS: &str = "custard_result";

pub(super) fn check(g: &GuardInner, sql: &str) -> Result<CheckedSql, Rejection> {
    if sql.len() > g.max_sql_bytes {
        return Err(Rejection::new(
            RejectionCode::TooLong,
            format!("SQL is {} bytes long; the limit is {} bytes", sql.len(), g.max_sql_bytes),
        ));
    }
    let mut statements = parse(g, sql)?;
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
    // SQL this guard wrapped in its row limit (what an agent receives from the
    // server) is checked as the query inside, keeping the tighter limit.
    let (query, wrapped_limit) = match unwrap_row_limit(g, &query) {
        Some((inner, limit)) => (inner, Some(limit)),
        None => (query, None),
    };
    let mut walker = Walker::new(g);
    if let ControlFlow::Break(rejection) = query.visit(&mut walker) {
        return Err(rejection);
    }
    let tables = walker.resolve()?;
    let max_rows = match (g.max_rows, wrapped_limit) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let printed = query.to_string();
    let (sql, row_limit) = limit(max_rows, &query);
    reads_back(g, &printed, &query, &sql)?;
    Ok(CheckedSql { query: printed, sql, dialect: g.dialect, row_limit, tables })
}

/// What runs is the checked tree printed back, so the printed text must mean
/// exactly that tree: sqlparser prints some string literals (an escaped quote
/// inside) in a way that reads back as different SQL, and SQL near the depth
/// limit can pass alone but not inside the row-limit wrapper. Either way the
/// text is refused rather than run with a meaning the guard did not check.
fn reads_back(g: &GuardInner, printed: &str, query: &Query, sql: &str) -> Result<(), Rejection> {
    let same = match parse(g, printed)?.as_slice() {
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
    if sql != printed {
        parse(g, sql).map_err(|r| {
            Rejection::new(r.code, format!("{} once wrapped in the row limit", r.message))
        })?;
    }
    Ok(())
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
    let run = || -> Result<Vec<Statement>, Rejection> {
        let dialect: &dyn sqlparser::dialect::Dialect = match g.dialect {
            Dialect::Postgres => &PostgreSqlDialect {},
            Dialect::Sqlite => &SQLiteDialect {},
        };
        let tokens = Tokenizer::new(dialect, sql)
            .tokenize_with_location()
            .map_err(|e| parse_rejection(g, ParserError::TokenizerError(e.to_string())))?;
        let (set_operations, binary_operators) = chained_operators(&tokens);
        if set_operations > MAX_SET_OPERATIONS || binary_operators > MAX_BINARY_OPERATORS {
            return Err(Rejection::new(
                RejectionCode::ParseError,
                format!(
                    "SQL chains {set_operations} set operations and {binary_operators} operators; \
                     the limits are {MAX_SET_OPERATIONS} and {MAX_BINARY_OPERATORS}"
                ),
            ));
        }
        Parser::new(dialect)
            .with_recursion_limit(g.recursion_limit)
            .with_tokens_with_locations(tokens)
            .parse_statements()
            .map_err(|e| parse_rejection(g, e))
    };
    // The parser is not supposed to panic; if it ever does, fail closed with an error.
    catch_unwind(AssertUnwindSafe(run))
        .unwrap_or_else(|_| Err(Rejection::new(RejectionCode::ParseError, "could not parse SQL")))
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

/// A table named in a FROM clause (or `TABLE name`), as written.
#[derive(Debug)]
struct RelationRef {
    schema: Option<Ident>,
    name: Ident,
    alias: Option<Ident>,
}

/// Walks the whole AST: stops at the first policy violation and collects the
/// names used, to be resolved against the schema once the walk is complete.
struct Walker<'g> {
    g: &'g GuardInner,
    ctes: HashSet<String>,
    relations: Vec<RelationRef>,
    /// Aliases of derived tables, CTE references and table functions.
    opaque_qualifiers: HashSet<String>,
    /// Names a query may use without a table column behind them: select-list
    /// aliases, alias column lists, CTE columns and function result names.
    output_names: HashSet<String>,
    column_refs: Vec<Vec<Ident>>,
    /// `*` (None) and `t.*` (Some(t)) select items.
    wildcards: Vec<Option<Ident>>,
    /// Whether a NATURAL join matches columns by name.
    natural_join: bool,
}

impl<'g> Walker<'g> {
    fn new(g: &'g GuardInner) -> Self {
        Walker {
            g,
            ctes: HashSet::new(),
            relations: Vec::new(),
            opaque_qualifiers: HashSet::new(),
            output_names: HashSet::new(),
            column_refs: Vec::new(),
            wildcards: Vec::new(),
            natural_join: false,
        }
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

    fn add_alias(&mut self, alias: Option<&TableAlias>) {
        if let Some(alias) = alias {
            let name = self.fold(&alias.name);
            self.opaque_qualifiers.insert(name);
            for column in &alias.columns {
                let name = self.fold(&column.name);
                self.output_names.insert(name);
            }
        }
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
            // PostgreSQL names an unaliased function column after the function.
            self.output_names.insert(base);
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
        self.check_function_name(&f.name)
    }

    fn record_relation(
        &mut self,
        name: &ObjectName,
        alias: Option<&TableAlias>,
    ) -> ControlFlow<Rejection> {
        let Some(parts) = idents(name) else { return Self::unsupported("a computed table name") };
        let (schema, table) = match parts.as_slice() {
            [t] => (None, (*t).clone()),
            [s, t] => (Some((*s).clone()), (*t).clone()),
            _ => return Self::unsupported(&format!("the cross-database reference `{name}`")),
        };
        if schema.is_none() && self.ctes.contains(&self.fold(&table)) {
            let q = alias.map_or_else(|| self.fold(&table), |a| self.fold(&a.name));
            self.opaque_qualifiers.insert(q);
            self.add_alias(alias);
            return ControlFlow::Continue(());
        }
        if self.is_system_relation(schema.as_ref(), &table) {
            return ControlFlow::Break(Rejection::new(
                RejectionCode::SystemCatalog,
                format!("system catalog `{name}` may not be read"),
            ));
        }
        if let Some(alias) = alias {
            for column in &alias.columns {
                let name = self.fold(&column.name);
                self.output_names.insert(name);
            }
        }
        self.relations.push(RelationRef {
            schema,
            name: table,
            alias: alias.map(|a| a.name.clone()),
        });
        ControlFlow::Continue(())
    }

    fn is_system_relation(&self, schema: Option<&Ident>, table: &Ident) -> bool {
        let table = self.fold(table).to_lowercase();
        let schema = schema.map(|s| self.fold(s).to_lowercase());
        match self.g.dialect {
            Dialect::Postgres => {
                table.starts_with("pg_")
                    || schema.is_some_and(|s| {
                        s == "pg_catalog" || s == "information_schema" || s.starts_with("pg_")
                    })
            }
            Dialect::Sqlite => table.starts_with("sqlite_") || table.starts_with("pragma_"),
        }
    }

    /// Resolves relations and columns; returns the tables read, as `schema.table`.
    fn resolve(self) -> Result<Vec<String>, Rejection> {
        let d = self.g.dialect;
        let mut tables = Vec::new();
        let mut resolved: Vec<(Option<TableId>, &RelationRef)> = Vec::new();
        for rel in &self.relations {
            let name = self.fold(&rel.name);
            let (schema, id) = match (&self.g.names, &rel.schema) {
                (Some(index), Some(schema)) => {
                    let schema = self.fold(schema);
                    let id = index
                        .table(&schema, &name)
                        .ok_or_else(|| unknown_table(index, rel, &name))?;
                    (schema, Some(id))
                }
                (Some(index), None) => {
                    let id = index
                        .resolve_unqualified(&self.g.search_path, &name)
                        .ok_or_else(|| unknown_table(index, rel, &name))?;
                    (catalog_key(d, &index.get(id).schema), Some(id))
                }
                (None, Some(schema)) => (self.fold(schema), None),
                (None, None) => (catalog_key(d, &self.g.search_path[0]), None),
            };
            self.check_allowed(&schema, &name, rel)?;
            let shown = format!("{schema}.{name}");
            if !tables.contains(&shown) {
                tables.push(shown);
            }
            resolved.push((id, rel));
        }
        if let Some(index) = &self.g.names {
            self.check_columns(index, &resolved)?;
            if !self.g.masked_columns.is_empty() {
                self.check_masks(index, &resolved)?;
            }
        } else if !self.g.masked_columns.is_empty() {
            // Masks name columns of tables; without the schema they cannot be enforced.
            return Err(Rejection::new(
                RejectionCode::ColumnMasked,
                "the agent masks columns but could not read the schema yet, so no query can run",
            ));
        }
        Ok(tables)
    }

    fn check_allowed(&self, schema: &str, name: &str, rel: &RelationRef) -> Result<(), Rejection> {
        let d = self.g.dialect;
        let schema_ok = self
            .g
            .allowed_schemas
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|s| catalog_key(d, s) == schema));
        let table_ok = self.g.allowed_tables.as_ref().is_none_or(|allowed| {
            allowed.iter().any(|(s, t)| catalog_key(d, s) == schema && catalog_key(d, t) == name)
        });
        if schema_ok && table_ok {
            Ok(())
        } else {
            let written = match &rel.schema {
                Some(s) => format!("{s}.{}", rel.name),
                None => rel.name.to_string(),
            };
            Err(Rejection::new(
                RejectionCode::TableNotAllowed,
                format!("table `{written}` is not allowed by this connection's policy"),
            ))
        }
    }

    /// Names that qualify columns in this query: real tables (by alias or
    /// name) and opaque ones (CTEs, derived tables, functions).
    fn qualifiers(
        &self,
        resolved: &[(Option<TableId>, &RelationRef)],
    ) -> HashMap<String, Option<TableId>> {
        let mut qualifiers: HashMap<String, Option<TableId>> = HashMap::new();
        for q in &self.opaque_qualifiers {
            qualifiers.insert(q.clone(), None);
        }
        for (id, rel) in resolved {
            let key = rel.alias.as_ref().unwrap_or(&rel.name);
            qualifiers.entry(self.fold(key)).or_insert(*id);
        }
        qualifiers
    }

    /// Rejects any way of reading a masked column: by name, through `*` or
    /// `t.*`, as a whole-row reference, or through USING / NATURAL joins.
    fn check_masks(
        &self,
        index: &NameIndex,
        resolved: &[(Option<TableId>, &RelationRef)],
    ) -> Result<(), Rejection> {
        let masks = &self.g.masked_columns;
        let d = self.g.dialect;
        let masked = |id: TableId, column: &str| {
            let t = index.get(id);
            masks.contains(&(catalog_key(d, &t.schema), catalog_key(d, &t.name), column.to_owned()))
        };
        let has_masks = |id: TableId| {
            index.get(id).columns.iter().any(|c| masked(id, &catalog_key(d, &c.name)))
        };
        let refusal = |what: String| {
            Rejection::new(
                RejectionCode::ColumnMasked,
                format!("{what}; the agent's policy masks it"),
            )
        };
        let qualifiers = self.qualifiers(resolved);
        let ids: Vec<TableId> = resolved.iter().filter_map(|(id, _)| *id).collect();
        let whole_table = |id: TableId| {
            refusal(format!(
                "table `{}` has masked columns, so list the columns you need instead of all of them",
                index.display(id)
            ))
        };
        if let Some(&id) = ids.iter().find(|&&id| has_masks(id))
            && (self.natural_join || self.wildcards.iter().any(Option::is_none))
        {
            return Err(whole_table(id));
        }
        for q in self.wildcards.iter().flatten() {
            if let Some(Some(id)) = qualifiers.get(&self.fold(q))
                && has_masks(*id)
            {
                return Err(whole_table(*id));
            }
        }
        for parts in &self.column_refs {
            let (tables, column): (Vec<TableId>, &Ident) = match parts.as_slice() {
                [column] => {
                    if let Some(Some(id)) = qualifiers.get(&self.fold(column))
                        && has_masks(*id)
                    {
                        return Err(whole_table(*id));
                    }
                    (ids.clone(), column)
                }
                [qualifier, column] => match qualifiers.get(&self.fold(qualifier)) {
                    Some(Some(id)) => (vec![*id], column),
                    _ => continue,
                },
                [schema, table, column] => match index.table(&self.fold(schema), &self.fold(table))
                {
                    Some(id) => (vec![id], column),
                    None => continue,
                },
                _ => continue,
            };
            let c = self.fold(column);
            if let Some(id) =
                tables.into_iter().find(|&id| index.has_column(id, &c) && masked(id, &c))
            {
                return Err(refusal(format!(
                    "column `{column}` of table `{}` may not be read",
                    index.display(id)
                )));
            }
        }
        Ok(())
    }

    fn check_columns(
        &self,
        index: &NameIndex,
        resolved: &[(Option<TableId>, &RelationRef)],
    ) -> Result<(), Rejection> {
        let qualifiers = self.qualifiers(resolved);
        let ids: Vec<TableId> = resolved.iter().filter_map(|(id, _)| *id).collect();
        let known = |column: &str| {
            self.output_names.contains(column) || ids.iter().any(|&id| index.has_column(id, column))
        };
        for parts in &self.column_refs {
            match parts.as_slice() {
                [column] => {
                    let c = self.fold(column);
                    if !known(&c) && !qualifiers.contains_key(&c) {
                        return Err(unknown_column(index, &ids, column, None));
                    }
                }
                [qualifier, column] => {
                    let c = self.fold(column);
                    match qualifiers.get(&self.fold(qualifier)) {
                        Some(Some(id)) if !index.has_column(*id, &c) => {
                            return Err(unknown_column(index, &[*id], column, Some(qualifier)));
                        }
                        Some(None) if !known(&c) => {
                            return Err(unknown_column(index, &ids, column, Some(qualifier)));
                        }
                        Some(_) => {}
                        None => {
                            let mut suggestions: Vec<String> = qualifiers.keys().cloned().collect();
                            suggestions.sort();
                            let suggestions = closest(
                                &qualifier.value,
                                suggestions.into_iter().map(|s| (s.clone(), s)),
                            );
                            return Err(Rejection {
                                code: RejectionCode::UnknownTable,
                                message: format!(
                                    "`{qualifier}` in `{qualifier}.{column}` is not a table or alias of this query{}",
                                    did_you_mean(&suggestions)
                                ),
                                suggestions,
                            });
                        }
                    }
                }
                [schema, table, column] => {
                    let (s, t, c) = (self.fold(schema), self.fold(table), self.fold(column));
                    match index.table(&s, &t) {
                        Some(id) if ids.contains(&id) => {
                            if !index.has_column(id, &c) {
                                return Err(unknown_column(index, &[id], column, Some(table)));
                            }
                        }
                        _ => {
                            return Err(Rejection::new(
                                RejectionCode::UnknownTable,
                                format!(
                                    "`{schema}.{table}` in `{schema}.{table}.{column}` is not a table of this query"
                                ),
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn did_you_mean(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        String::new()
    } else {
        format!(
            "; did you mean {}?",
            suggestions.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
        )
    }
}

fn unknown_table(index: &NameIndex, rel: &RelationRef, folded: &str) -> Rejection {
    // A table that exists in another schema is the most useful hint of all.
    let mut suggestions: Vec<String> =
        index.tables_named(folded).into_iter().map(|id| index.display(id)).collect();
    if suggestions.is_empty() {
        suggestions = index.suggest_tables(&rel.name.value);
    }
    let written = match &rel.schema {
        Some(s) => format!("{s}.{}", rel.name),
        None => rel.name.to_string(),
    };
    Rejection {
        code: RejectionCode::UnknownTable,
        message: format!("table `{written}` does not exist{}", did_you_mean(&suggestions)),
        suggestions,
    }
}

fn unknown_column(
    index: &NameIndex,
    tables: &[TableId],
    column: &Ident,
    qualifier: Option<&Ident>,
) -> Rejection {
    let suggestions = index.suggest_columns(tables, &column.value);
    let written = match qualifier {
        Some(q) => format!("{q}.{column}"),
        None => column.to_string(),
    };
    let place = match tables {
        [one] => format!("table `{}`", index.display(*one)),
        _ => "the tables of this query".to_owned(),
    };
    Rejection {
        code: RejectionCode::UnknownColumn,
        message: format!(
            "column `{written}` does not exist in {place}{}",
            did_you_mean(&suggestions)
        ),
        suggestions,
    }
}

/// The constraint of the usual join operators.
fn join_constraint(op: &JoinOperator) -> Option<&JoinConstraint> {
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
fn idents(name: &ObjectName) -> Option<Vec<&Ident>> {
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
                let name = self.fold(&cte.alias.name);
                self.ctes.insert(name);
                for column in &cte.alias.columns {
                    let name = self.fold(&column.name);
                    self.output_names.insert(name);
                }
            }
        }
        self.check_set_expr(&query.body)
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
        {
            return Self::unsupported("a clause from another SQL dialect");
        }
        for join in select.from.iter().flat_map(|t| &t.joins) {
            match join_constraint(&join.join_operator) {
                Some(JoinConstraint::Using(columns) | JoinConstraint::UsingAlias(columns, _)) => {
                    for column in
                        columns.iter().filter_map(|c| idents(c)?.last().map(|i| (*i).clone()))
                    {
                        self.column_refs.push(vec![column]);
                    }
                }
                Some(JoinConstraint::Natural) => self.natural_join = true,
                _ => {}
            }
        }
        for item in &select.projection {
            match item {
                SelectItem::Wildcard(_) => self.wildcards.push(None),
                SelectItem::QualifiedWildcard(
                    SelectItemQualifiedWildcardKind::ObjectName(name),
                    _,
                ) => {
                    self.wildcards.push(idents(name).and_then(|p| p.last().map(|i| (*i).clone())));
                }
                SelectItem::ExprWithAlias { alias, .. } => {
                    let name = self.fold(alias);
                    self.output_names.insert(name);
                }
                SelectItem::ExprWithAliases { aliases, .. } => {
                    for alias in aliases {
                        let name = self.fold(alias);
                        self.output_names.insert(name);
                    }
                }
                _ => {}
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<Rejection> {
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
                match args {
                    Some(args) => {
                        if args.settings.is_some() {
                            return Self::unsupported("table function settings");
                        }
                        self.check_function_name(name)?;
                        self.add_alias(alias.as_ref());
                        ControlFlow::Continue(())
                    }
                    None => self.record_relation(name, alias.as_ref()),
                }
            }
            TableFactor::Function { name, alias, .. } => {
                self.check_function_name(name)?;
                self.add_alias(alias.as_ref());
                ControlFlow::Continue(())
            }
            TableFactor::Derived { alias, .. } | TableFactor::UNNEST { alias, .. } => {
                self.add_alias(alias.as_ref());
                ControlFlow::Continue(())
            }
            TableFactor::NestedJoin { alias, .. } => {
                self.add_alias(alias.as_ref());
                ControlFlow::Continue(())
            }
            _ => Self::unsupported("this kind of FROM item"),
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<Rejection> {
        match expr {
            Expr::Identifier(ident) => {
                self.column_refs.push(vec![ident.clone()]);
                ControlFlow::Continue(())
            }
            Expr::CompoundIdentifier(parts) => {
                self.column_refs.push(parts.clone());
                ControlFlow::Continue(())
            }
            Expr::Function(f) => self.check_function(f),
            Expr::BinaryOp { op: BinaryOperator::PGCustomBinaryOperator(_), .. } => {
                ControlFlow::Break(Rejection::new(
                    RejectionCode::FunctionNotAllowed,
                    "OPERATOR(...) calls are not allowed in read-only queries",
                ))
            }
            Expr::Value(v) if matches!(v.value, Value::Placeholder(_)) => {
                Self::unsupported("a query parameter placeholder")
            }
            Expr::CompoundFieldAccess { .. }
            | Expr::JsonAccess { .. }
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
            | Expr::Cast { .. }
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
            | Expr::TypedString(_)
            | Expr::Case { .. }
            | Expr::Exists { .. }
            | Expr::Subquery(_)
            | Expr::GroupingSets(_)
            | Expr::Cube(_)
            | Expr::Rollup(_)
            | Expr::Tuple(_)
            | Expr::Array(_)
            | Expr::Interval(_)
            | Expr::Wildcard(_)
            | Expr::QualifiedWildcard(..) => ControlFlow::Continue(()),
            _ => Self::unsupported("this kind of expression"),
        }
    }
}

impl Walker<'_> {
    /// Looks through a query body for `TABLE name`, which names a relation
    /// outside any FROM clause.
    fn check_set_expr(&mut self, body: &SetExpr) -> ControlFlow<Rejection> {
        match body {
            SetExpr::SetOperation { left, right, .. } => {
                self.check_set_expr(left)?;
                self.check_set_expr(right)
            }
            SetExpr::Table(table) => {
                let Some(name) = &table.table_name else {
                    return Self::unsupported("TABLE without a name");
                };
                let parts: Vec<Ident> =
                    table.schema_name.iter().chain(std::iter::once(name)).cloned().collect();
                self.record_relation(&ObjectName::from(parts), None)
            }
            _ => ControlFlow::Continue(()),
        }
    }
}

/// Prints the checked query, wrapped in a row limit unless its own literal
/// `LIMIT` is already within bounds. Returns the SQL and the row limit.
fn limit(max_rows: Option<u64>, query: &Query) -> (String, Option<u64>) {
    let Some(max) = max_rows else { return (query.to_string(), None) };
    if query.fetch.is_none() && literal_limit(query).is_some_and(|n| n <= max) {
        return (query.to_string(), Some(max));
    }
    // One row more than allowed, so the executor can tell that rows were left out.
    (format!("SELECT * FROM ({query}) AS {WRAP_ALIAS} LIMIT {}", max.saturating_add(1)), Some(max))
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
