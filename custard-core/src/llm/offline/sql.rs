//! The query the engine decided on, and how it is written in each dialect.

use std::fmt::Write;

use super::catalog::{Catalog, ColId, Kind, Link, TableId};
use super::lexer::{AggFn, Dir, Unit};
use crate::Dialect;
use crate::schema::ddl_ident;

/// One query over a table and parents joined to it along foreign keys.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Query {
    pub(super) from: TableId,
    pub(super) joins: Vec<Link>,
    pub(super) distinct: bool,
    pub(super) select: Vec<Output>,
    pub(super) filters: Vec<Filter>,
    pub(super) group_by: Vec<ColId>,
    pub(super) order: Option<(Order, Dir)>,
    pub(super) limit: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Output {
    /// Every column of the main table.
    Star,
    Column(ColId),
    Metric(Metric),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Metric {
    Count,
    CountDistinct(ColId),
    Agg(AggFn, ColId),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Order {
    Column(ColId),
    Metric(Metric),
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Filter {
    /// Equal to one of these texts, ignoring case.
    Text(ColId, Vec<String>),
    Number(ColId, u64),
    /// Within the last `n` units up to today.
    Window(ColId, u64, Unit),
    /// A date within the calendar year.
    Year(ColId, u64),
}

impl Query {
    pub(super) fn new(from: TableId) -> Self {
        Query {
            from,
            joins: Vec::new(),
            distinct: false,
            select: Vec::new(),
            filters: Vec::new(),
            group_by: Vec::new(),
            order: None,
            limit: None,
        }
    }

    /// The tables the query reads.
    pub(super) fn tables(&self) -> Vec<TableId> {
        std::iter::once(self.from).chain(self.joins.iter().map(|l| l.parent)).collect()
    }

    /// Joins `table` (a parent of the main table) unless the query reads it already.
    pub(super) fn join(&mut self, cat: &Catalog<'_>, table: TableId) -> bool {
        if self.tables().contains(&table) {
            return true;
        }
        match cat.link(self.from, table) {
            Some(link) => {
                self.joins.push(link);
                true
            }
            None => false,
        }
    }

    /// Adds a text filter, merging values for the same column ("Paris or Lyon").
    pub(super) fn filter_text(&mut self, col: ColId, value: String) {
        for f in &mut self.filters {
            if let Filter::Text(c, values) = f
                && *c == col
            {
                if !values.contains(&value) {
                    values.push(value);
                }
                return;
            }
        }
        self.filters.push(Filter::Text(col, vec![value]));
    }

    /// Writes the query in `dialect`.
    pub(super) fn to_sql(&self, cat: &Catalog<'_>, dialect: Dialect) -> String {
        let w = Writer::new(cat, dialect, self);
        let mut sql = String::from("SELECT ");
        if self.distinct {
            sql.push_str("DISTINCT ");
        }
        let items: Vec<String> = self.select.iter().map(|o| w.output(o)).collect();
        sql.push_str(&items.join(", "));
        let _ = write!(sql, " FROM {}", w.table(self.from));
        for link in &self.joins {
            let _ = write!(
                sql,
                " JOIN {} ON {} = {}",
                w.table(link.parent),
                w.column((link.child, link.column)),
                w.column((link.parent, link.parent_column))
            );
        }
        let filters: Vec<String> = self.filters.iter().map(|f| w.filter(f)).collect();
        if !filters.is_empty() {
            let _ = write!(sql, " WHERE {}", filters.join(" AND "));
        }
        if !self.group_by.is_empty() {
            let cols: Vec<String> = self.group_by.iter().map(|&c| w.column(c)).collect();
            let _ = write!(sql, " GROUP BY {}", cols.join(", "));
        }
        if let Some((order, dir)) = &self.order {
            let (key, nullable) = match order {
                Order::Column(c) => (w.column(*c), true),
                Order::Metric(m) => (
                    ddl_ident(dialect, &w.alias(m)),
                    !matches!(m, Metric::Count | Metric::CountDistinct(_)),
                ),
            };
            let word = match dir {
                Dir::Asc => "ASC",
                Dir::Desc => "DESC",
            };
            let _ = write!(sql, " ORDER BY {key} {word}");
            // PostgreSQL sorts NULL first when descending.
            if nullable && dialect == Dialect::Postgres && *dir == Dir::Desc {
                sql.push_str(" NULLS LAST");
            }
        }
        if let Some(n) = self.limit {
            let _ = write!(sql, " LIMIT {n}");
        }
        sql
    }
}

/// Names tables, columns and aliases for one query.
struct Writer<'a> {
    cat: &'a Catalog<'a>,
    dialect: Dialect,
    from: TableId,
    /// Table aliases, when the query joins; none for a single table.
    aliases: Vec<(TableId, String)>,
}

impl<'a> Writer<'a> {
    fn new(cat: &'a Catalog<'a>, dialect: Dialect, q: &Query) -> Self {
        let mut aliases: Vec<(TableId, String)> = Vec::new();
        if !q.joins.is_empty() {
            for t in q.tables() {
                let initials: String = cat.tables[t]
                    .words
                    .iter()
                    .filter_map(|w| w.chars().next())
                    .filter(char::is_ascii_alphabetic)
                    .collect();
                let base = if initials.is_empty() { "t".to_owned() } else { initials };
                let mut alias = base.clone();
                let mut n = 1;
                // Aliases must be distinct, plain identifiers and no column name.
                while aliases.iter().any(|(_, a)| *a == alias)
                    || ddl_ident(dialect, &alias) != alias
                    || q.tables().iter().any(|&t| cat.table(t).column(&alias).is_some())
                {
                    n += 1;
                    alias = format!("{base}{n}");
                }
                aliases.push((t, alias));
            }
        }
        Writer { cat, dialect, from: q.from, aliases }
    }

    fn table(&self, t: TableId) -> String {
        let table = self.cat.table(t);
        let name = if table.schema == self.dialect.default_schema() {
            ddl_ident(self.dialect, &table.name)
        } else {
            format!(
                "{}.{}",
                ddl_ident(self.dialect, &table.schema),
                ddl_ident(self.dialect, &table.name)
            )
        };
        match self.aliases.iter().find(|(id, _)| *id == t) {
            Some((_, alias)) => format!("{name} AS {alias}"),
            None => name,
        }
    }

    fn column(&self, c: ColId) -> String {
        let name = ddl_ident(self.dialect, self.cat.column_name(c));
        match self.aliases.iter().find(|(id, _)| *id == c.0) {
            Some((_, alias)) => format!("{alias}.{name}"),
            None => name,
        }
    }

    fn output(&self, o: &Output) -> String {
        match o {
            Output::Star => match self.aliases.first() {
                Some((_, alias)) => format!("{alias}.*"),
                None => "*".to_owned(),
            },
            Output::Column(c) => self.column(*c),
            Output::Metric(m) => {
                let expr = match m {
                    Metric::Count => "COUNT(*)".to_owned(),
                    Metric::CountDistinct(c) => format!("COUNT(DISTINCT {})", self.column(*c)),
                    Metric::Agg(f, c) => {
                        let name = match f {
                            AggFn::Sum => "SUM",
                            AggFn::Avg => "AVG",
                            AggFn::Max => "MAX",
                            AggFn::Min => "MIN",
                        };
                        format!("{name}({})", self.column(*c))
                    }
                };
                format!("{expr} AS {}", ddl_ident(self.dialect, &self.alias(m)))
            }
        }
    }

    /// A readable name for a metric's column: `order_count`, `average_price`.
    fn alias(&self, m: &Metric) -> String {
        let words = |c: ColId| self.cat.column(c).words.join("_");
        match m {
            Metric::Count => {
                let table = &self.cat.tables[self.from].words;
                if table.is_empty() {
                    "row_count".to_owned()
                } else {
                    format!("{}_count", table.join("_"))
                }
            }
            Metric::CountDistinct(c) => format!("{}_count", words(*c)),
            Metric::Agg(f, c) => {
                let prefix = match f {
                    AggFn::Sum => "total",
                    AggFn::Avg => "average",
                    AggFn::Max => "max",
                    AggFn::Min => "min",
                };
                format!("{prefix}_{}", words(*c))
            }
        }
    }

    fn filter(&self, f: &Filter) -> String {
        match f {
            Filter::Text(c, values) => {
                let parts: Vec<String> = values.iter().map(|v| self.text_equals(*c, v)).collect();
                if parts.len() == 1 { parts.concat() } else { format!("({})", parts.join(" OR ")) }
            }
            Filter::Number(c, n) => format!("{} = {n}", self.column(*c)),
            Filter::Window(c, n, unit) => {
                let col = self.column(*c);
                match self.dialect {
                    Dialect::Postgres => {
                        let unit = match unit {
                            Unit::Day => "day",
                            Unit::Week => "week",
                            Unit::Month => "month",
                            Unit::Year => "year",
                        };
                        let s = if *n == 1 { "" } else { "s" };
                        format!("{col} >= CURRENT_DATE - INTERVAL '{n} {unit}{s}'")
                    }
                    _ => {
                        // SQLite's date() has no week modifier.
                        let (n, unit) = match unit {
                            Unit::Day => (*n, "days"),
                            Unit::Week => (n * 7, "days"),
                            Unit::Month => (*n, "months"),
                            Unit::Year => (*n, "years"),
                        };
                        format!("{col} >= date('now', '-{n} {unit}')")
                    }
                }
            }
            Filter::Year(c, year) => {
                let col = self.column(*c);
                if self.cat.column(*c).kind == Kind::Date {
                    format!("{col} >= '{year}-01-01' AND {col} < '{}-01-01'", year + 1)
                } else {
                    format!("{col} = {year}")
                }
            }
        }
    }

    /// Case-insensitive equality where the column is text; exact otherwise
    /// (an enum cannot be compared with ILIKE).
    fn text_equals(&self, c: ColId, value: &str) -> String {
        let col = self.column(c);
        let literal = format!("'{}'", value.replace('\'', "''"));
        let wildcard = value.contains(['%', '_', '\\']);
        if self.cat.column(c).kind != Kind::Text || wildcard {
            return format!("{col} = {literal}");
        }
        match self.dialect {
            Dialect::Postgres => format!("{col} ILIKE {literal}"),
            _ => format!("{col} LIKE {literal}"),
        }
    }
}
