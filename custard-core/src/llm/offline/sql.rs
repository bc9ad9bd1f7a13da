//! The query the engine decided on, and how it is written in each dialect.

use std::fmt::Write;

use super::catalog::{Catalog, ColId, Kind, Link, TableId, canon};
use super::lexer::{AggFn, Dir, Unit};
use crate::Dialect;
use crate::schema::ddl_ident;
use crate::text::words;

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
    /// The result column name of each metric, unique within the query.
    metric_names: Vec<(Metric, String)>,
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
        let mut w = Writer { cat, dialect, from: q.from, aliases, metric_names: Vec::new() };
        w.metric_names = w.name_metrics(q);
        w
    }

    /// A name for every metric the query selects or sorts by: no other output
    /// column, table alias or metric has it (compared ignoring case).
    fn name_metrics(&self, q: &Query) -> Vec<(Metric, String)> {
        let mut taken: Vec<String> = self.aliases.iter().map(|(_, a)| a.to_lowercase()).collect();
        for o in &q.select {
            match o {
                Output::Column(c) => taken.push(self.cat.column_name(*c).to_lowercase()),
                Output::Star => taken
                    .extend(self.cat.table(q.from).columns.iter().map(|c| c.name.to_lowercase())),
                Output::Metric(_) => {}
            }
        }
        let ordered = match q.order {
            Some((Order::Metric(m), _)) => Some(m),
            _ => None,
        };
        let metrics = q.select.iter().filter_map(|o| match o {
            Output::Metric(m) => Some(*m),
            _ => None,
        });
        let mut names: Vec<(Metric, String)> = Vec::new();
        for m in metrics.chain(ordered) {
            if names.iter().any(|(seen, _)| *seen == m) {
                continue;
            }
            let [first, second] = self.metric_name_choices(&m);
            let free = |name: &str| !taken.iter().any(|t| *t == name.to_lowercase());
            let name = [first.clone(), second]
                .into_iter()
                .find(|n| free(n))
                .or_else(|| (2..).map(|k| format!("{first}_{k}")).find(|n| free(n)))
                .unwrap_or(first);
            taken.push(name.to_lowercase());
            names.push((m, name));
        }
        names
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

    /// The result column name of a metric: `order_count`, `average_price`, `total_amount`.
    fn alias(&self, m: &Metric) -> String {
        match self.metric_names.iter().find(|(seen, _)| seen == m) {
            Some((_, name)) => name.clone(),
            None => self.metric_name_choices(m)[0].clone(),
        }
    }

    /// A readable name for a metric's column, and a second one should the
    /// first be taken: the words of what it counts or measures, with the
    /// aggregate in front unless the words say it already (the sum of
    /// `total_amount` is `total_amount`, not `total_total_amount`).
    fn metric_name_choices(&self, m: &Metric) -> [String; 2] {
        match m {
            Metric::Count => {
                let table = &self.cat.tables[self.from].words;
                let name = if table.is_empty() {
                    "row_count".to_owned()
                } else {
                    format!("{}_count", table.join("_"))
                };
                [name, "row_count".to_owned()]
            }
            Metric::CountDistinct(c) => {
                let words = self.cat.column(*c).words.join("_");
                [format!("{words}_count"), format!("distinct_{words}_count")]
            }
            Metric::Agg(f, c) => {
                let (prefix, synonyms): (&str, &[&str]) = match f {
                    AggFn::Sum => ("total", &["total", "sum"]),
                    AggFn::Avg => ("average", &["average", "avg", "mean"]),
                    AggFn::Max => ("max", &["max", "maximum", "highest"]),
                    AggFn::Min => ("min", &["min", "minimum", "lowest"]),
                };
                let words = self.measure_words(*c);
                let prefixed = format!("{prefix}_{}", words.join("_"));
                // A sum of a total is still a total; any other aggregate says itself first.
                let says_it = match f {
                    AggFn::Sum => words.iter().any(|w| synonyms.contains(&w.as_str())),
                    _ => words.first().is_some_and(|w| synonyms.contains(&w.as_str())),
                };
                if says_it {
                    let fallback = match f {
                        AggFn::Sum => format!("sum_{}", words.join("_")),
                        _ => prefixed,
                    };
                    [words.join("_"), fallback]
                } else {
                    let fallback = format!("{}_{}", f_name(*f), words.join("_"));
                    [prefixed, fallback]
                }
            }
        }
    }

    /// The words of a measured column as written (`sales`, not the stem
    /// `sale`), or the engine's words when its name carries a glued table
    /// prefix (`sbtxamount` is `amount`).
    fn measure_words(&self, c: ColId) -> Vec<String> {
        let info = self.cat.column(c);
        let name = self.cat.column_name(c);
        let canonical: Vec<String> = words(name).iter().map(|w| canon(w)).collect();
        let written = written_words(name);
        if canonical == info.words && !written.is_empty() { written } else { info.words.clone() }
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

/// The SQL name of an aggregate function, lowercase.
fn f_name(f: AggFn) -> &'static str {
    match f {
        AggFn::Sum => "sum",
        AggFn::Avg => "avg",
        AggFn::Max => "max",
        AggFn::Min => "min",
    }
}

/// A name's words as written, lowercase and unstemmed: `unitPrice` and
/// `unit_price` are `unit`, `price`.
fn written_words(name: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut prev_lower = false;
    for ch in name.chars() {
        if !ch.is_alphanumeric() {
            out.extend((!word.is_empty()).then(|| std::mem::take(&mut word)));
            prev_lower = false;
            continue;
        }
        if ch.is_uppercase() && prev_lower {
            out.push(std::mem::take(&mut word));
        }
        prev_lower = ch.is_lowercase() || ch.is_ascii_digit();
        word.extend(ch.to_lowercase());
    }
    out.extend((!word.is_empty()).then_some(word));
    out
}
