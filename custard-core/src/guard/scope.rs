//! Name resolution that follows SQL scoping: which relation every table name
//! means, which source every column reference reads, and whether any of them
//! reaches a system catalog, a table outside the policy or a masked column.
//!
//! The binder walks the query block by block, the way PostgreSQL analyses it:
//! - CTEs live in a stack of frames, one per `WITH`: a CTE is visible in the
//!   main body of its `WITH` and everything nested in it, to the CTEs after it
//!   and, under `WITH RECURSIVE`, to every CTE of the list including itself;
//!   a name no CTE frame holds is a real relation (or a catalog).
//! - Columns live in a stack of levels, one per query block: a name resolves
//!   in the innermost level that has it. While the FROM list is read, a level
//!   shows only what SQL lets each item see: nothing of its own block for a
//!   plain derived table, the items to its left for `LATERAL` and table
//!   functions, the join's own inputs for an `ON` condition.
//!
//! "A column is read" means any way its value can reach the output or a
//! predicate: by name at any qualification depth, `t.*` or `t` (a whole row)
//! anywhere in an expression, positional renames through alias lists, joins by
//! name (`USING`, `NATURAL`). A masked column is refused wherever it is read,
//! so no derived table, CTE or subquery can carry a masked value onwards; only
//! base-table sources (renamed or joined) ever hold masked columns. Where the
//! binder cannot tell which columns a name means it assumes every reading
//! SQL allows and refuses if any of them is masked.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::rc::Rc;

use sqlparser::ast::{
    AccessExpr, Distinct, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr,
    Ident, JoinConstraint, ObjectName, OrderByKind, Query, Select, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, TableAlias, TableFactor, TableWithJoins, Visit,
    Visitor, WildcardAdditionalOptions,
};

use super::names::{NameIndex, TableId, catalog_key, closest, fold};
use super::policy::{idents, is_session_keyword, join_constraint};
use super::{GuardInner, Rejection, RejectionCode};
use crate::Dialect;

/// What the binder found: the tables read, and how many name nodes it resolved
/// (the policy walk counts the same nodes; a difference means a part of the
/// tree was not resolved, and the query is refused).
pub(super) struct Bound {
    pub(super) tables: Vec<String>,
    pub(super) names: usize,
}

/// Resolves every name of `query`.
pub(super) fn bind(g: &GuardInner, query: &Query) -> Result<Bound, Rejection> {
    if g.names.is_none() && !g.masked_columns.is_empty() {
        // Masks name columns of tables; without the schema they cannot be enforced.
        return Err(Rejection::new(
            RejectionCode::ColumnMasked,
            "the agent masks columns but could not read the schema yet, so no query can run",
        ));
    }
    let mut binder = Binder {
        g,
        index: g.names.as_ref(),
        levels: Vec::new(),
        ctes: Vec::new(),
        tables: Vec::new(),
        names: 0,
    };
    binder.query(query)?;
    Ok(Bound { tables: binder.tables, names: binder.names })
}

/// A column of a source, as the query may name it.
#[derive(Clone, Debug)]
struct Col {
    name: String,
    /// Read from a masked column of a base table (possibly renamed).
    masked: bool,
}

/// Something in a FROM clause whose columns a query block can name.
#[derive(Debug)]
struct Source {
    /// The name that qualifies its columns (the alias, else the table's name).
    name: Option<String>,
    /// `(schema, table)` of an unaliased base table, for `schema.table.column`.
    table: Option<(String, String)>,
    /// The base table behind it, for suggestions.
    id: Option<TableId>,
    cols: Vec<Col>,
    /// It may have columns beyond `cols` (a function's result, a derived
    /// column the binder cannot name, a table of an unknown schema); those
    /// are never masked.
    open: bool,
}

impl Source {
    fn has_masked(&self) -> bool {
        self.cols.iter().any(|c| c.masked)
    }
}

/// The output columns of a query: names where the binder knows them.
#[derive(Clone, Debug, Default)]
struct Shape {
    names: Vec<String>,
    open: bool,
}

impl Shape {
    /// The shape seen through an alias column list: renamed by position.
    fn renamed(mut self, alias: Option<&TableAlias>, d: Dialect) -> Self {
        for (i, c) in alias.map(|a| a.columns.as_slice()).unwrap_or_default().iter().enumerate() {
            let name = fold(d, &c.name);
            match self.names.get_mut(i) {
                Some(slot) => *slot = name,
                None => self.names.push(name),
            }
        }
        self
    }
}

#[derive(Debug)]
struct Cte {
    name: String,
    shape: Shape,
}

/// The names one query block can see.
#[derive(Debug, Default, Clone)]
struct Level {
    sources: Vec<Rc<Source>>,
    /// Output column names, visible to ORDER BY, GROUP BY and HAVING.
    outputs: Vec<String>,
    outputs_open: bool,
}

/// Where a column reference stands, for how SQL resolves it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Clause {
    /// Output aliases are not visible (select list, WHERE, ON, FROM items).
    Input,
    /// Output aliases are visible too (ORDER BY, GROUP BY, HAVING, DISTINCT ON).
    WithOutputs,
}

struct Binder<'g> {
    g: &'g GuardInner,
    index: Option<&'g NameIndex>,
    levels: Vec<Level>,
    ctes: Vec<Vec<Rc<Cte>>>,
    tables: Vec<String>,
    names: usize,
}

type Bind<T = ()> = Result<T, Rejection>;

fn unsupported(what: &str) -> Rejection {
    Rejection::new(
        RejectionCode::Unsupported,
        format!("{what} is not supported in read-only queries"),
    )
}

fn masked_refusal(what: String) -> Rejection {
    Rejection::new(RejectionCode::ColumnMasked, format!("{what}; the agent's policy masks it"))
}

impl<'g> Binder<'g> {
    fn fold(&self, ident: &Ident) -> String {
        fold(self.g.dialect, ident)
    }

    fn top(&mut self) -> &mut Level {
        if self.levels.is_empty() {
            self.levels.push(Level::default());
        }
        let last = self.levels.len() - 1;
        &mut self.levels[last]
    }

    // ---- queries ----------------------------------------------------------

    fn query(&mut self, q: &Query) -> Bind<Shape> {
        let frame = q.with.is_some();
        if let Some(with) = &q.with {
            self.ctes.push(Vec::new());
            let names: Vec<String> =
                with.cte_tables.iter().map(|c| self.fold(&c.alias.name)).collect();
            if with.recursive {
                // Every CTE of the list is visible in every body, its own included.
                let frame: Vec<Rc<Cte>> = with
                    .cte_tables
                    .iter()
                    .zip(&names)
                    .map(|(c, name)| {
                        let shape = Shape { names: Vec::new(), open: true }
                            .renamed(Some(&c.alias), self.g.dialect);
                        Rc::new(Cte { name: name.clone(), shape })
                    })
                    .collect();
                *self.ctes.last_mut().expect("frame") = frame;
            }
            for (i, cte) in with.cte_tables.iter().enumerate() {
                for column in &cte.alias.columns {
                    self.check_alias_type(column.data_type.as_ref())?;
                }
                let shape = self.query(&cte.query)?.renamed(Some(&cte.alias), self.g.dialect);
                let cte = Rc::new(Cte { name: names[i].clone(), shape });
                let frame = self.ctes.last_mut().expect("frame");
                if with.recursive {
                    frame[i] = cte;
                } else {
                    frame.push(cte);
                }
            }
        }
        let result = self.query_body(q);
        if frame {
            self.ctes.pop();
        }
        result
    }

    fn query_body(&mut self, q: &Query) -> Bind<Shape> {
        let (shape, level) = self.set_expr(&q.body)?;
        if let Some(order_by) = &q.order_by {
            let level = level.unwrap_or_else(|| Level {
                sources: Vec::new(),
                outputs: shape.names.clone(),
                outputs_open: shape.open,
            });
            let exprs = match &order_by.kind {
                OrderByKind::Expressions(exprs) => exprs,
                OrderByKind::All(_) => return Err(unsupported("ORDER BY ALL")),
            };
            if order_by.interpolate.is_some() {
                return Err(unsupported("ORDER BY ... INTERPOLATE"));
            }
            self.levels.push(level);
            let result = exprs.iter().try_for_each(|e| self.exprs(e, Clause::WithOutputs));
            self.levels.pop();
            result?;
        }
        // LIMIT, OFFSET and FETCH see no column of the query itself.
        self.levels.push(Level::default());
        let result = self
            .exprs(&q.limit_clause, Clause::Input)
            .and_then(|()| self.exprs(&q.fetch, Clause::Input));
        self.levels.pop();
        result?;
        Ok(shape)
    }

    /// Binds a query body; for a plain SELECT also returns its level, which
    /// the query's ORDER BY sees.
    fn set_expr(&mut self, body: &SetExpr) -> Bind<(Shape, Option<Level>)> {
        match body {
            SetExpr::Select(select) => {
                let (shape, level) = self.select(select)?;
                Ok((shape, Some(level)))
            }
            SetExpr::Query(q) => Ok((self.query(q)?, None)),
            SetExpr::SetOperation { left, right, .. } => {
                let (shape, _) = self.set_expr(left)?;
                self.set_expr(right)?;
                Ok((shape, None))
            }
            SetExpr::Values(values) => {
                self.levels.push(Level::default());
                let result = self.exprs(&values.rows, Clause::Input);
                self.levels.pop();
                result?;
                let width = values.rows.first().map_or(0, |r| r.len());
                let names = (1..=width).map(|i| format!("column{i}")).collect();
                Ok((Shape { names, open: false }, None))
            }
            SetExpr::Table(table) => {
                let Some(name) = &table.table_name else {
                    return Err(unsupported("TABLE without a name"));
                };
                let parts: Vec<Ident> =
                    table.schema_name.iter().chain(std::iter::once(name)).cloned().collect();
                let source = self.relation(&ObjectName::from(parts), None)?;
                if source.has_masked() {
                    return Err(self.whole_table(&source));
                }
                let shape = Shape {
                    names: source.cols.iter().map(|c| c.name.clone()).collect(),
                    open: source.open,
                };
                Ok((shape, None))
            }
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
                Err(Rejection::new(
                    RejectionCode::DataModifying,
                    "a data-modifying statement inside a query is not allowed",
                ))
            }
        }
    }

    fn select(&mut self, s: &Select) -> Bind<(Shape, Level)> {
        self.levels.push(Level::default());
        let result = self.select_in_level(s);
        let level = self.levels.pop().unwrap_or_default();
        result.map(|shape| (shape, level))
    }

    fn select_in_level(&mut self, s: &Select) -> Bind<Shape> {
        let mut items: Vec<Rc<Source>> = Vec::new();
        for twj in &s.from {
            let added = self.table_with_joins(twj, &items)?;
            items.extend(added);
        }
        self.top().sources = items;
        self.exprs(&s.selection, Clause::Input)?;
        let mut shape = Shape::default();
        for item in &s.projection {
            self.select_item(item, &mut shape)?;
        }
        let level = self.top();
        level.outputs = shape.names.clone();
        level.outputs_open = shape.open;
        match &s.group_by {
            GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => {
                self.exprs(exprs, Clause::WithOutputs)?;
            }
            _ => return Err(unsupported("this GROUP BY form")),
        }
        self.exprs(&s.having, Clause::WithOutputs)?;
        self.exprs(&s.named_window, Clause::Input)?;
        match &s.distinct {
            None | Some(Distinct::Distinct | Distinct::All) => {}
            Some(Distinct::On(exprs)) => self.exprs(exprs, Clause::WithOutputs)?,
        }
        if s.exclude.is_some() {
            return Err(unsupported("SELECT ... EXCLUDE"));
        }
        Ok(shape)
    }

    fn select_item(&mut self, item: &SelectItem, shape: &mut Shape) -> Bind {
        match item {
            SelectItem::UnnamedExpr(expr) => {
                self.exprs(expr, Clause::Input)?;
                match self.output_name(expr) {
                    Some(name) => shape.names.push(name),
                    None => shape.open = true,
                }
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                self.exprs(expr, Clause::Input)?;
                shape.names.push(self.fold(alias));
            }
            SelectItem::ExprWithAliases { expr, aliases } => {
                self.exprs(expr, Clause::Input)?;
                shape.names.extend(aliases.iter().map(|a| self.fold(a)));
            }
            SelectItem::Wildcard(options) => {
                plain_wildcard(options)?;
                let sources = self.top().sources.clone();
                if let Some(source) = sources.iter().find(|s| s.has_masked()) {
                    return Err(self.whole_table(source));
                }
                for source in &sources {
                    shape.names.extend(source.cols.iter().map(|c| c.name.clone()));
                    shape.open |= source.open;
                }
            }
            SelectItem::QualifiedWildcard(kind, options) => {
                plain_wildcard(options)?;
                match kind {
                    SelectItemQualifiedWildcardKind::ObjectName(name) => {
                        for source in self.whole_row(name)? {
                            shape.names.extend(source.cols.iter().map(|c| c.name.clone()));
                            shape.open |= source.open;
                        }
                    }
                    SelectItemQualifiedWildcardKind::Expr(expr) => {
                        self.exprs(expr, Clause::Input)?;
                        shape.open = true;
                    }
                }
            }
        }
        Ok(())
    }

    /// The name PostgreSQL gives an unaliased output column, when it is sure.
    fn output_name(&self, expr: &Expr) -> Option<String> {
        match expr {
            Expr::Identifier(i) if !is_session_keyword(self.g.dialect, i) => Some(self.fold(i)),
            Expr::CompoundIdentifier(parts) => parts.last().map(|i| self.fold(i)),
            Expr::Function(f) => idents(&f.name)?.last().map(|i| self.fold(i)),
            Expr::Nested(inner) => self.output_name(inner),
            _ => None,
        }
    }

    // ---- FROM -------------------------------------------------------------

    /// Binds one FROM item and its joins; `left` are the items before it in
    /// the FROM list (visible to LATERAL items only). Returns its sources.
    fn table_with_joins(
        &mut self,
        twj: &TableWithJoins,
        left: &[Rc<Source>],
    ) -> Bind<Vec<Rc<Source>>> {
        let mut tree = self.table_factor(&twj.relation, left)?;
        for join in &twj.joins {
            let visible: Vec<Rc<Source>> = left.iter().chain(&tree).cloned().collect();
            let right = self.table_factor(&join.relation, &visible)?;
            let Some(constraint) = join_constraint(&join.join_operator) else {
                return Err(unsupported("this kind of join"));
            };
            match constraint {
                JoinConstraint::On(expr) => {
                    // An ON condition sees the join's own inputs only.
                    self.top().sources = tree.iter().chain(&right).cloned().collect();
                    self.exprs(expr, Clause::Input)?;
                }
                JoinConstraint::Using(columns) => {
                    for column in columns {
                        let Some(parts) = idents(column) else {
                            return Err(unsupported("a computed USING column"));
                        };
                        let [column] = parts.as_slice() else {
                            return Err(unsupported("a qualified USING column"));
                        };
                        let c = self.fold(column);
                        for side in [&tree, &right] {
                            self.using_column(side, column, &c)?;
                        }
                    }
                }
                JoinConstraint::Natural => self.natural(&tree, &right)?,
                JoinConstraint::None => {}
                JoinConstraint::UsingAlias(..) => {
                    return Err(unsupported("USING ... AS"));
                }
            }
            tree.extend(right);
        }
        Ok(tree)
    }

    /// A column named in USING, read on one side of the join.
    fn using_column(&self, side: &[Rc<Source>], column: &Ident, c: &str) -> Bind {
        let mut found = false;
        for source in side {
            for col in source.cols.iter().filter(|col| col.name == c) {
                if col.masked {
                    return Err(self.masked_column(source, column));
                }
                found = true;
            }
            found |= source.open;
        }
        if found || self.index.is_none() {
            Ok(())
        } else {
            Err(self.unknown_column(side, column, None))
        }
    }

    /// NATURAL joins compare every column name the two sides share.
    fn natural(&self, left: &[Rc<Source>], right: &[Rc<Source>]) -> Bind {
        let names = |side: &[Rc<Source>]| -> (HashSet<String>, bool) {
            let open = side.iter().any(|s| s.open);
            (side.iter().flat_map(|s| s.cols.iter().map(|c| c.name.clone())).collect(), open)
        };
        let (left_names, left_open) = names(left);
        let (right_names, right_open) = names(right);
        for (side, other, other_open) in
            [(left, &right_names, right_open), (right, &left_names, left_open)]
        {
            for source in side {
                if let Some(col) =
                    source.cols.iter().find(|c| c.masked && (other_open || other.contains(&c.name)))
                {
                    return Err(masked_refusal(format!(
                        "a NATURAL join compares column `{}` of table `{}`",
                        col.name,
                        self.source_label(source)
                    )));
                }
            }
        }
        Ok(())
    }

    fn table_factor(&mut self, factor: &TableFactor, left: &[Rc<Source>]) -> Bind<Vec<Rc<Source>>> {
        self.names += 1;
        match factor {
            TableFactor::Table { name, alias, args: None, sample, .. } => {
                if sample.is_some() {
                    // TABLESAMPLE arguments see no column of the query.
                    self.top().sources = Vec::new();
                    self.exprs(sample, Clause::Input)?;
                }
                self.check_alias(alias.as_ref())?;
                Ok(vec![self.relation(name, alias.as_ref())?])
            }
            TableFactor::Table { name, alias, args: Some(args), sample, .. } => {
                if sample.is_some() {
                    return Err(unsupported("TABLESAMPLE on a function"));
                }
                self.top().sources = left.to_vec();
                self.function_args(&args.args)?;
                Ok(vec![self.function_source(name, alias.as_ref())?])
            }
            TableFactor::Function { name, args, alias, .. } => {
                // Functions in FROM see the items to their left, LATERAL or not.
                self.top().sources = left.to_vec();
                self.function_args(args)?;
                Ok(vec![self.function_source(name, alias.as_ref())?])
            }
            TableFactor::UNNEST { alias, array_exprs, with_offset, with_offset_alias, .. } => {
                if *with_offset || with_offset_alias.is_some() {
                    return Err(unsupported("UNNEST ... WITH OFFSET"));
                }
                self.top().sources = left.to_vec();
                self.exprs(array_exprs, Clause::Input)?;
                self.check_alias(alias.as_ref())?;
                Ok(vec![Rc::new(Source {
                    name: alias.as_ref().map(|a| self.fold(&a.name)),
                    table: None,
                    id: None,
                    cols: Vec::new(),
                    open: true,
                })])
            }
            TableFactor::Derived { lateral, subquery, alias, sample } => {
                if sample.is_some() {
                    return Err(unsupported("TABLESAMPLE on a subquery"));
                }
                self.check_alias(alias.as_ref())?;
                // A plain derived table sees the enclosing queries, not its siblings.
                self.top().sources = if *lateral { left.to_vec() } else { Vec::new() };
                let shape = self.query(subquery)?.renamed(alias.as_ref(), self.g.dialect);
                Ok(vec![Rc::new(Source {
                    name: alias.as_ref().map(|a| self.fold(&a.name)),
                    table: None,
                    id: None,
                    cols: shape.names.into_iter().map(|name| Col { name, masked: false }).collect(),
                    open: shape.open,
                })])
            }
            TableFactor::NestedJoin { table_with_joins, alias } => {
                self.check_alias(alias.as_ref())?;
                let inner = self.table_with_joins(table_with_joins, left)?;
                let Some(alias) = alias else { return Ok(inner) };
                // An alias hides the joined tables' names behind one name for all their columns.
                if !alias.columns.is_empty() && inner.iter().any(|s| s.has_masked()) {
                    return Err(masked_refusal(format!(
                        "column aliases over a join that reads table `{}` cannot be checked",
                        self.source_label(inner.iter().find(|s| s.has_masked()).expect("masked"))
                    )));
                }
                let mut cols: Vec<Col> =
                    inner.iter().flat_map(|s| s.cols.iter().cloned()).collect();
                for (col, name) in cols.iter_mut().zip(&alias.columns) {
                    col.name = self.fold(&name.name);
                }
                Ok(vec![Rc::new(Source {
                    name: Some(self.fold(&alias.name)),
                    table: None,
                    id: None,
                    cols,
                    open: inner.iter().any(|s| s.open),
                })])
            }
            _ => Err(unsupported("this kind of FROM item")),
        }
    }

    fn check_alias(&self, alias: Option<&TableAlias>) -> Bind {
        for column in alias.map(|a| a.columns.as_slice()).unwrap_or_default() {
            self.check_alias_type(column.data_type.as_ref())?;
        }
        Ok(())
    }

    fn check_alias_type(&self, data_type: Option<&sqlparser::ast::DataType>) -> Bind {
        match data_type {
            Some(t) => super::policy::check_type(self.g.dialect, t),
            None => Ok(()),
        }
    }

    fn function_args(&mut self, args: &[FunctionArg]) -> Bind {
        for arg in args {
            let (FunctionArg::Named { arg, .. }
            | FunctionArg::ExprNamed { arg, .. }
            | FunctionArg::Unnamed(arg)) = arg;
            match arg {
                FunctionArgExpr::Expr(e) => self.exprs(e, Clause::Input)?,
                FunctionArgExpr::QualifiedWildcard(name) => {
                    self.names += 1;
                    self.whole_row(name)?;
                }
                FunctionArgExpr::Wildcard => {}
                FunctionArgExpr::WildcardWithOptions(_) => {
                    return Err(unsupported("a wildcard with options"));
                }
            }
        }
        Ok(())
    }

    fn function_source(
        &mut self,
        name: &ObjectName,
        alias: Option<&TableAlias>,
    ) -> Bind<Rc<Source>> {
        self.check_alias(alias)?;
        let qualifier = match alias {
            Some(a) => Some(self.fold(&a.name)),
            None => idents(name).and_then(|p| p.last().map(|i| self.fold(i))),
        };
        let shape = Shape::default().renamed(alias, self.g.dialect);
        Ok(Rc::new(Source {
            name: qualifier,
            table: None,
            id: None,
            cols: shape.names.into_iter().map(|name| Col { name, masked: false }).collect(),
            open: true,
        }))
    }

    /// A table name in FROM (or `TABLE name`): a CTE in scope, else a real
    /// relation, checked against the catalogs, the schema and the policy.
    fn relation(&mut self, name: &ObjectName, alias: Option<&TableAlias>) -> Bind<Rc<Source>> {
        let d = self.g.dialect;
        let Some(parts) = idents(name) else { return Err(unsupported("a computed table name")) };
        let (schema, table) = match parts.as_slice() {
            [t] => (None, *t),
            [s, t] => (Some(*s), *t),
            _ => return Err(unsupported(&format!("the cross-database reference `{name}`"))),
        };
        let folded = self.fold(table);
        if schema.is_none()
            && let Some(cte) = self.cte(&folded)
        {
            let shape = cte.shape.clone().renamed(alias, d);
            return Ok(Rc::new(Source {
                name: Some(alias.map_or(folded, |a| self.fold(&a.name))),
                table: None,
                id: None,
                cols: shape.names.into_iter().map(|name| Col { name, masked: false }).collect(),
                open: shape.open,
            }));
        }
        if self.is_system_relation(schema, table) {
            return Err(Rejection::new(
                RejectionCode::SystemCatalog,
                format!("system catalog `{name}` may not be read"),
            ));
        }
        let (schema_name, id) = match (self.index, schema) {
            (Some(index), Some(s)) => {
                let s = self.fold(s);
                let id = index
                    .table(&s, &folded)
                    .ok_or_else(|| unknown_table(index, schema, table, &folded))?;
                (s, Some(id))
            }
            (Some(index), None) => {
                let id = index
                    .resolve_unqualified(&self.g.search_path, &folded)
                    .ok_or_else(|| unknown_table(index, schema, table, &folded))?;
                (catalog_key(d, &index.get(id).schema), Some(id))
            }
            (None, Some(s)) => (self.fold(s), None),
            (None, None) => (catalog_key(d, &self.g.search_path[0]), None),
        };
        self.check_allowed(&schema_name, &folded, name)?;
        let shown = format!("{schema_name}.{folded}");
        if !self.tables.contains(&shown) {
            self.tables.push(shown);
        }
        let mut cols: Vec<Col> = match (self.index, id) {
            (Some(index), Some(id)) => {
                let t = index.get(id);
                t.columns
                    .iter()
                    .map(|c| {
                        let name = catalog_key(d, &c.name);
                        let masked = self.g.masked_columns.contains(&(
                            catalog_key(d, &t.schema),
                            catalog_key(d, &t.name),
                            name.clone(),
                        ));
                        Col { name, masked }
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        // A masked column the schema does not list (PostgreSQL's discovery
        // shows only the columns the role may read, and a role made for the
        // policy may not read it) is still the table's: `*` covers it.
        if let (Some(index), Some(id)) = (self.index, id) {
            let t = index.get(id);
            let (schema, table) = (catalog_key(d, &t.schema), catalog_key(d, &t.name));
            let mut hidden: Vec<&String> = self
                .g
                .masked_columns
                .iter()
                .filter(|(s, n, c)| {
                    *s == schema && *n == table && !cols.iter().any(|x| x.name == *c)
                })
                .map(|(_, _, c)| c)
                .collect();
            hidden.sort();
            cols.extend(hidden.into_iter().map(|name| Col { name: name.clone(), masked: true }));
        }
        // An alias column list renames columns by position; what they read stays.
        for (col, new) in
            cols.iter_mut().zip(alias.map(|a| a.columns.as_slice()).unwrap_or_default())
        {
            col.name = self.fold(&new.name);
        }
        Ok(Rc::new(Source {
            name: Some(alias.map_or_else(|| folded.clone(), |a| self.fold(&a.name))),
            table: alias.is_none().then_some((schema_name, folded)),
            id,
            cols,
            open: id.is_none(),
        }))
    }

    fn cte(&self, name: &str) -> Option<Rc<Cte>> {
        self.ctes.iter().rev().find_map(|frame| frame.iter().find(|c| c.name == name).cloned())
    }

    /// PostgreSQL searches `pg_catalog` before the search path, so an
    /// unqualified `pg_*` name that no CTE holds is a catalog.
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

    fn check_allowed(&self, schema: &str, name: &str, written: &ObjectName) -> Bind {
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
            Err(Rejection::new(
                RejectionCode::TableNotAllowed,
                format!("table `{written}` is not allowed by this connection's policy"),
            ))
        }
    }

    // ---- expressions ------------------------------------------------------

    /// Resolves every name in `node` (an expression or a part holding
    /// expressions) against the current levels; nested queries get their own.
    fn exprs<V: Visit>(&mut self, node: &V, clause: Clause) -> Bind {
        let mut visitor = ExprBinder { b: self, clause, depth: 0, fields: HashSet::new() };
        match node.visit(&mut visitor) {
            ControlFlow::Break(r) => Err(r),
            ControlFlow::Continue(()) => Ok(()),
        }
    }

    /// A column reference of one to four parts.
    fn column(&mut self, parts: &[Ident], clause: Clause) -> Bind {
        match parts {
            [column] => self.unqualified(column, clause),
            [qualifier, column] => {
                let q = self.fold(qualifier);
                let sources = self.sources_named(&q);
                if sources.is_empty() {
                    return Err(self.unknown_qualifier(qualifier, column));
                }
                self.qualified(&sources, column)
            }
            [schema, table, column] | [_, schema, table, column] => {
                let key = (self.fold(schema), self.fold(table));
                let sources = self.sources_of_table(&key);
                if sources.is_empty() {
                    return Err(Rejection::new(
                        RejectionCode::UnknownTable,
                        format!(
                            "`{schema}.{table}` in `{schema}.{table}.{column}` is not a table of this query"
                        ),
                    ));
                }
                self.qualified(&sources, column)
            }
            _ => Err(unsupported(&format!(
                "the column reference `{}`",
                parts.iter().map(ToString::to_string).collect::<Vec<_>>().join(".")
            ))),
        }
    }

    /// `q.c`: column `c` of the sources named `q` in the innermost level that has one.
    fn qualified(&self, sources: &[Rc<Source>], column: &Ident) -> Bind {
        let c = self.fold(column);
        let mut found = false;
        for source in sources {
            for col in source.cols.iter().filter(|col| col.name == c) {
                if col.masked {
                    return Err(self.masked_column(source, column));
                }
                found = true;
            }
        }
        if found {
            return Ok(());
        }
        // Not a column PostgreSQL knows of: `t.f` may be `f(t)`, a whole-row read.
        if let Some(source) = sources.iter().find(|s| s.open) {
            if source.has_masked() {
                return Err(self.whole_table(source));
            }
            return Ok(());
        }
        if self.index.is_none() {
            return Ok(());
        }
        let qualifier = sources[0].name.clone().unwrap_or_default();
        Err(self.unknown_column(sources, column, Some(&qualifier)))
    }

    fn unqualified(&mut self, column: &Ident, clause: Clause) -> Bind {
        let c = self.fold(column);
        let mut maybe = false;
        let innermost = self.levels.len();
        for (depth, level) in self.levels.iter().enumerate().rev() {
            let mut hit = false;
            for source in &level.sources {
                let mut in_source = false;
                for col in source.cols.iter().filter(|col| col.name == c) {
                    if col.masked {
                        return Err(self.masked_column(source, column));
                    }
                    in_source = true;
                }
                hit |= in_source;
                maybe |= !in_source && source.open;
            }
            if depth + 1 == innermost
                && clause == Clause::WithOutputs
                && (level.outputs_open || level.outputs.contains(&c))
            {
                maybe = true;
            }
            if hit {
                return Ok(());
            }
        }
        // Not certainly a column (a source of unknown columns may or may not
        // have it): PostgreSQL reads `t` as t's whole row when it is not.
        let sources = self.sources_named(&c);
        if let Some(source) = sources.iter().find(|s| s.has_masked()) {
            return Err(self.whole_table(source));
        }
        if maybe || !sources.is_empty() {
            return Ok(());
        }
        let here: Vec<Rc<Source>> =
            self.levels.last().map(|l| l.sources.clone()).unwrap_or_default();
        Err(self.unknown_column(&here, column, None))
    }

    /// `t.*` or `t` as a whole row, anywhere: every column of `t` is read.
    fn whole_row(&self, name: &ObjectName) -> Bind<Vec<Rc<Source>>> {
        let Some(parts) = idents(name) else { return Err(unsupported("a computed qualifier")) };
        let sources = match parts.as_slice() {
            [q] => self.sources_named(&self.fold(q)),
            [s, t] | [_, s, t] => self.sources_of_table(&(self.fold(s), self.fold(t))),
            _ => return Err(unsupported(&format!("`{name}.*`"))),
        };
        if sources.is_empty() {
            return Err(Rejection::new(
                RejectionCode::UnknownTable,
                format!("`{name}` in `{name}.*` is not a table or alias of this query"),
            ));
        }
        if let Some(source) = sources.iter().find(|s| s.has_masked()) {
            return Err(self.whole_table(source));
        }
        Ok(sources)
    }

    /// The sources called `q` in the innermost level that has any.
    fn sources_named(&self, q: &str) -> Vec<Rc<Source>> {
        self.innermost(|s| s.name.as_deref() == Some(q))
    }

    /// The unaliased base tables `schema.table` in the innermost level that has any.
    fn sources_of_table(&self, key: &(String, String)) -> Vec<Rc<Source>> {
        self.innermost(|s| s.table.as_ref() == Some(key))
    }

    /// The sources that match in the innermost level where any does.
    fn innermost(&self, matches: impl Fn(&Source) -> bool) -> Vec<Rc<Source>> {
        self.levels
            .iter()
            .rev()
            .map(|l| l.sources.iter().filter(|s| matches(s)).cloned().collect::<Vec<_>>())
            .find(|found| !found.is_empty())
            .unwrap_or_default()
    }

    // ---- messages ---------------------------------------------------------

    fn source_label(&self, source: &Source) -> String {
        match (self.index, source.id) {
            (Some(index), Some(id)) => index.display(id),
            _ => source.name.clone().unwrap_or_else(|| "?".to_owned()),
        }
    }

    fn masked_column(&self, source: &Source, column: &Ident) -> Rejection {
        masked_refusal(format!(
            "column `{column}` of table `{}` may not be read",
            self.source_label(source)
        ))
    }

    fn whole_table(&self, source: &Source) -> Rejection {
        masked_refusal(format!(
            "table `{}` has masked columns, so list the columns you need instead of all of them",
            self.source_label(source)
        ))
    }

    fn unknown_column(
        &self,
        sources: &[Rc<Source>],
        column: &Ident,
        qualifier: Option<&str>,
    ) -> Rejection {
        let ids: Vec<TableId> = sources.iter().filter_map(|s| s.id).collect();
        let (suggestions, place) = match self.index {
            Some(index) => (
                index.suggest_columns(&ids, &column.value),
                match ids.as_slice() {
                    [one] => format!("table `{}`", index.display(*one)),
                    _ => "the tables of this query".to_owned(),
                },
            ),
            None => (Vec::new(), "the tables of this query".to_owned()),
        };
        let written = match qualifier {
            Some(q) => format!("{q}.{column}"),
            None => column.to_string(),
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

    fn unknown_qualifier(&self, qualifier: &Ident, column: &Ident) -> Rejection {
        let mut names: Vec<String> = self
            .levels
            .iter()
            .flat_map(|l| l.sources.iter().filter_map(|s| s.name.clone()))
            .collect();
        names.sort();
        names.dedup();
        let suggestions = closest(&qualifier.value, names.into_iter().map(|s| (s.clone(), s)));
        Rejection {
            code: RejectionCode::UnknownTable,
            message: format!(
                "`{qualifier}` in `{qualifier}.{column}` is not a table or alias of this query{}",
                did_you_mean(&suggestions)
            ),
            suggestions,
        }
    }
}

/// Select-list wildcards with options from other dialects (`EXCLUDE`,
/// `REPLACE`, ...) are refused rather than interpreted.
fn plain_wildcard(options: &WildcardAdditionalOptions) -> Bind {
    if options.opt_ilike.is_some()
        || options.opt_exclude.is_some()
        || options.opt_except.is_some()
        || options.opt_replace.is_some()
        || options.opt_rename.is_some()
        || options.opt_alias.is_some()
    {
        return Err(unsupported("a wildcard with options"));
    }
    Ok(())
}

pub(super) fn did_you_mean(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        String::new()
    } else {
        format!(
            "; did you mean {}?",
            suggestions.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
        )
    }
}

fn unknown_table(
    index: &NameIndex,
    schema: Option<&Ident>,
    name: &Ident,
    folded: &str,
) -> Rejection {
    // A table that exists in another schema is the most useful hint of all.
    let mut suggestions: Vec<String> =
        index.tables_named(folded).into_iter().map(|id| index.display(id)).collect();
    if suggestions.is_empty() {
        suggestions = index.suggest_tables(&name.value);
    }
    let written = match schema {
        Some(s) => format!("{s}.{name}"),
        None => name.to_string(),
    };
    Rejection {
        code: RejectionCode::UnknownTable,
        message: format!("table `{written}` does not exist{}", did_you_mean(&suggestions)),
        suggestions,
    }
}

/// Resolves the names of one expression (or clause) in the binder's levels;
/// nested queries are bound as queries of their own, with these levels outside.
struct ExprBinder<'b, 'g> {
    b: &'b mut Binder<'g>,
    clause: Clause,
    /// How deep inside a nested query the walk is (names there were bound already).
    depth: usize,
    /// Field names after a `.` in `(x).f`, which are not column references.
    fields: HashSet<*const Expr>,
}

impl Visitor for ExprBinder<'_, '_> {
    type Break = Rejection;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Rejection> {
        if self.depth == 0
            && let Err(r) = self.b.query(query)
        {
            return ControlFlow::Break(r);
        }
        self.depth += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<Rejection> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<Rejection> {
        if self.depth > 0 {
            return ControlFlow::Continue(());
        }
        let result = match expr {
            Expr::Identifier(ident) => {
                if is_session_keyword(self.b.g.dialect, ident)
                    || self.fields.contains(&(expr as *const Expr))
                {
                    return ControlFlow::Continue(());
                }
                self.b.names += 1;
                self.b.column(std::slice::from_ref(ident), self.clause)
            }
            Expr::CompoundIdentifier(parts) => {
                self.b.names += 1;
                self.b.column(parts, self.clause)
            }
            Expr::QualifiedWildcard(name, _) => {
                self.b.names += 1;
                self.b.whole_row(name).map(drop)
            }
            Expr::CompoundFieldAccess { access_chain, .. } => {
                for access in access_chain {
                    if let AccessExpr::Dot(field @ Expr::Identifier(_)) = access {
                        self.fields.insert(field as *const Expr);
                    }
                }
                Ok(())
            }
            Expr::Function(f) => match &f.args {
                FunctionArguments::List(list) => list.args.iter().try_for_each(|arg| {
                    let (FunctionArg::Named { arg, .. }
                    | FunctionArg::ExprNamed { arg, .. }
                    | FunctionArg::Unnamed(arg)) = arg;
                    match arg {
                        FunctionArgExpr::QualifiedWildcard(name) => {
                            self.b.names += 1;
                            self.b.whole_row(name).map(drop)
                        }
                        FunctionArgExpr::WildcardWithOptions(_) => {
                            Err(unsupported("a wildcard with options"))
                        }
                        FunctionArgExpr::Expr(_) | FunctionArgExpr::Wildcard => Ok(()),
                    }
                }),
                _ => Ok(()),
            },
            _ => Ok(()),
        };
        match result {
            Ok(()) => ControlFlow::Continue(()),
            Err(r) => ControlFlow::Break(r),
        }
    }
}
