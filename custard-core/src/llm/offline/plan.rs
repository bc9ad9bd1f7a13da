//! From one reading of a question to a query: what is counted, measured,
//! listed, grouped, filtered and ranked. Every step that has more than one
//! answer gives up rather than guess.

use super::Abstain;
use super::catalog::{Catalog, ColId, ColumnInfo, Kind, TableId};
use super::lexer::{AggFn, Dir, Keyword, Unit};
use super::parse::{Item, ItemKind, Noun, Question};
use super::sql::{Filter, Metric, Order, Output, Query};

/// Words that may open a sentence saying what to return.
const OUTPUT_VERBS: &[&str] = &["return", "give", "show", "list", "include", "display", "provide"];

/// Plans the query one reading of the question asks for.
pub(super) fn plan(cat: &Catalog<'_>, q: &Question<'_>, items: &[Item]) -> Result<Query, Abstain> {
    let first = items.first().map_or(0, |i| i.sentence);
    let (main, rest): (Vec<Item>, Vec<Item>) =
        items.iter().cloned().partition(|i| i.sentence == first);
    let (main, filters) = bind_labels(cat, q, main)?;
    let clauses = clauses(q, &main)?;
    let mut b = Builder { cat, q: Query::new(0), qualifiers: Vec::new() };
    b.shape(&clauses)?;
    for f in filters {
        b.filter(f)?;
    }
    b.check_qualifiers()?;
    let mut sentences: Vec<usize> = rest.iter().map(|i| i.sentence).collect();
    sentences.dedup();
    for s in sentences {
        let part: Vec<Item> = rest.iter().filter(|i| i.sentence == s).cloned().collect();
        b.outputs(q, &part)?;
    }
    Ok(b.q)
}

/// A filter as written, before its column is known.
#[derive(Debug)]
enum RawFilter {
    Value { columns: Vec<(ColId, String)>, text: String, label: Option<Noun> },
    Literal { text: String, label: Option<Noun>, named: bool },
    Number { n: u64, label: Noun },
    Year(u64),
    Window { n: u64, unit: Unit, label: Option<Noun> },
}

/// Words that may stand between a column and its value: "status is 'shipped'", "city of Paris".
const LABEL_GAP: &[&str] = &["is", "of", "equal", "equals", "to", "as", "was", "are", "were"];
/// Words that may stand between a date column and its window: "created in the last 30 days".
const WINDOW_GAP: &[&str] = &["in", "the", "within", "during", "over", "at", "on"];

/// Takes the values, numbers and time windows out of the items, each with
/// the noun that names its column ("status 'shipped'", "customer 5"), if any.
fn bind_labels(
    cat: &Catalog<'_>,
    q: &Question<'_>,
    items: Vec<Item>,
) -> Result<(Vec<Item>, Vec<RawFilter>), Abstain> {
    let mut used = vec![false; items.len()];
    let noun_at = |k: usize| match items.get(k).map(|i| &i.kind) {
        Some(ItemKind::Noun(n)) => Some(n.clone()),
        _ => None,
    };
    // The noun right before item `p`, with only `allowed` words between them.
    let before = |used: &[bool], p: usize, allowed: &[&str]| {
        let k = p.checked_sub(1).filter(|&k| !used[k])?;
        let gap = q.gap(&items[k], &items[p]);
        gap.iter().all(|w| allowed.contains(w)).then_some(k)
    };
    let mut filters = Vec::new();
    for p in 0..items.len() {
        match &items[p].kind {
            ItemKind::Value(columns, text) => {
                let names = |n: &Noun| n.columns.iter().any(|c| columns.iter().any(|v| v.0 == c.0));
                // "pending status": the column may also follow its value.
                let after = Some(p + 1).filter(|&k| {
                    k < items.len() && !used[k] && q.gap(&items[p], &items[k]).is_empty()
                });
                let label = [before(&used, p, LABEL_GAP), after]
                    .into_iter()
                    .flatten()
                    .find(|&k| noun_at(k).is_some_and(|n| names(&n)));
                if let Some(k) = label {
                    used[k] = true;
                }
                // "Lake Michigan" is a name, not lakes in the state of Michigan.
                if let Some(k) = before(&used, p, &[]).filter(|&k| Some(k) != label)
                    && matches!(items[k].kind, ItemKind::Noun(_))
                    && q.capitalized_inside(items[k].end - 1)
                {
                    return Err(Abstain::new(format!(
                        "could not tell whether '{}' is a name",
                        q.span(items[k].end - 1, items[p].end)
                    )));
                }
                // "customers named Alice", Alice being a sample value.
                if let Some(k) = before(&used, p, &[])
                    .filter(|&k| matches!(items[k].kind, ItemKind::Kw(Keyword::Named)))
                {
                    used[k] = true;
                }
                let label = label.and_then(noun_at);
                filters.push(RawFilter::Value {
                    columns: columns.clone(),
                    text: text.clone(),
                    label,
                });
            }
            ItemKind::Literal(text) => {
                let k = before(&used, p, LABEL_GAP);
                let named =
                    k.is_some_and(|k| matches!(items[k].kind, ItemKind::Kw(Keyword::Named)));
                let label = if named { None } else { k.and_then(noun_at) };
                if let Some(k) = k.filter(|_| named || label.is_some()) {
                    used[k] = true;
                }
                filters.push(RawFilter::Literal { text: text.clone(), label, named });
            }
            // "the 3 products with the lowest price": a limit, kept for the clauses.
            ItemKind::Number(_) if ranked_count(&items, p) => {}
            ItemKind::Number(n) => {
                let k = before(&used, p, &["is"]);
                let Some(label) = k.and_then(noun_at) else {
                    return Err(Abstain::new(format!(
                        "could not tell what the number {n} refers to"
                    )));
                };
                if let Some(k) = k {
                    used[k] = true;
                }
                filters.push(RawFilter::Number { n: *n, label });
            }
            ItemKind::Window(n, unit) => {
                // "created in the last 30 days"; not "orders in the last 30 days".
                let dated = |n: &Noun| {
                    !is_table_like(n)
                        && n.columns.iter().any(|c| c.1 >= 2 && cat.column(c.0).kind == Kind::Date)
                };
                let k =
                    before(&used, p, WINDOW_GAP).filter(|&k| noun_at(k).is_some_and(|n| dated(&n)));
                if let Some(k) = k {
                    used[k] = true;
                }
                filters.push(RawFilter::Window { n: *n, unit: *unit, label: k.and_then(noun_at) });
            }
            ItemKind::Year(y) => filters.push(RawFilter::Year(*y)),
            _ => {}
        }
    }
    let limits: Vec<bool> = (0..items.len()).map(|p| ranked_count(&items, p)).collect();
    let rest = items
        .into_iter()
        .enumerate()
        .filter_map(|(k, mut i)| {
            if limits[k] {
                if let ItemKind::Number(n) = i.kind {
                    i.kind = ItemKind::Top(n, Dir::Desc);
                }
                return Some(i);
            }
            let filter = matches!(
                i.kind,
                ItemKind::Value(..)
                    | ItemKind::Literal(_)
                    | ItemKind::Number(_)
                    | ItemKind::Window(..)
                    | ItemKind::Year(_)
            );
            (!used[k] && !filter).then_some(i)
        })
        .collect();
    Ok((rest, filters))
}

/// Whether the number at `p` opens the question's subject and a superlative
/// follows: "the 3 products with the lowest price".
fn ranked_count(items: &[Item], p: usize) -> bool {
    let opens = items[..p].iter().all(|i| matches!(i.kind, ItemKind::Kw(Keyword::List)));
    let subject = matches!(items.get(p + 1).map(|i| &i.kind), Some(ItemKind::Noun(_)));
    let sup =
        items[p + 1..].iter().any(|i| matches!(i.kind, ItemKind::Kw(Keyword::Superlative { .. })));
    matches!(items[p].kind, ItemKind::Number(_)) && opens && subject && sup
}

/// What a clause of the question starts with.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Head {
    Start,
    List,
    Count,
    Agg(AggFn),
    Sup { dir: Dir, most: bool },
    Top(u64, Dir),
    By,
    Each,
    OrderBy,
}

/// A keyword and the nouns that follow it.
#[derive(Debug)]
struct Clause {
    head: Head,
    nouns: Vec<Noun>,
    distinct: bool,
}

#[derive(Debug, Default)]
struct Clauses {
    list: Vec<Clause>,
    direction: Option<Dir>,
    alphabetical: bool,
}

fn clauses(q: &Question<'_>, items: &[Item]) -> Result<Clauses, Abstain> {
    let mut out = Clauses::default();
    let mut list = vec![Clause { head: Head::Start, nouns: Vec::new(), distinct: false }];
    for item in items {
        let head = match &item.kind {
            ItemKind::Noun(n) => {
                if let Some(c) = list.last_mut() {
                    c.nouns.push(n.clone());
                }
                continue;
            }
            ItemKind::Top(n, dir) => Head::Top(*n, *dir),
            ItemKind::Kw(kw) => match kw {
                Keyword::Count => Head::Count,
                Keyword::Agg(f) => Head::Agg(*f),
                Keyword::Superlative { dir, most } => Head::Sup { dir: *dir, most: *most },
                Keyword::By => Head::By,
                Keyword::Each => Head::Each,
                Keyword::OrderBy => Head::OrderBy,
                Keyword::List => Head::List,
                Keyword::Distinct => {
                    match list.last_mut() {
                        Some(c) if matches!(c.head, Head::Start | Head::List | Head::Count) => {
                            c.distinct = true
                        }
                        _ => return Err(unsupported(q, item)),
                    }
                    continue;
                }
                Keyword::Direction(d) => {
                    if out.direction.is_some_and(|x| x != *d) {
                        return Err(Abstain::new("found two sort directions"));
                    }
                    out.direction = Some(*d);
                    continue;
                }
                Keyword::Alphabetical => {
                    out.alphabetical = true;
                    continue;
                }
                Keyword::Named
                | Keyword::Recent
                | Keyword::Unsupported
                | Keyword::Top(_)
                | Keyword::Sorted => {
                    return Err(unsupported(q, item));
                }
                Keyword::Filler => continue,
            },
            _ => return Err(unsupported(q, item)),
        };
        // "list the top 5 ...", "show the number of ...": the verb adds nothing.
        let bare_start = list.len() == 1
            && list[0].nouns.is_empty()
            && matches!(list[0].head, Head::Start | Head::List)
            && (!list[0].distinct || head == Head::List);
        if bare_start {
            list[0].head = head;
        } else {
            list.push(Clause { head, nouns: Vec::new(), distinct: false });
        }
    }
    out.list = list;
    Ok(out)
}

fn unsupported(q: &Question<'_>, item: &Item) -> Abstain {
    let word = &q.tokens[item.token].lower;
    Abstain::new(format!("does not handle '{word}' in a question"))
}

/// Where the question puts each noun.
#[derive(Debug, Default)]
struct Shape<'c> {
    subject: Vec<Noun>,
    subject_distinct: bool,
    top: Option<(u64, Dir)>,
    metric: Option<(Head, &'c [Noun], bool)>,
    /// The superlative (direction, "most"), and its nouns.
    sup: Option<(Dir, bool, &'c [Noun])>,
    by: Option<&'c [Noun]>,
    each: Vec<&'c Noun>,
    order: Option<&'c [Noun]>,
    /// The ranking is by the metric ("top 5 countries by number of customers").
    rank_by_metric: bool,
}

fn shape<'c>(clauses: &'c Clauses) -> Result<Shape<'c>, Abstain> {
    let mut s = Shape::default();
    // A lone keyword read as a name may only be what an aggregate or ranking measures.
    for c in &clauses.list {
        let measured = matches!(c.head, Head::Agg(_) | Head::Sup { .. })
            || (c.head == Head::By
                && clauses.list.first().is_some_and(|f| matches!(f.head, Head::Top(..))));
        let weak =
            c.nouns.iter().enumerate().find(|(i, n)| n.keyword_like && !(measured && *i == 0));
        if let Some((_, n)) = weak {
            return Err(Abstain::new(format!("could not tell what '{}' means here", n.text)));
        }
    }
    for (k, c) in clauses.list.iter().enumerate() {
        let next_is_metric =
            clauses.list.get(k + 1).is_some_and(|n| matches!(n.head, Head::Count | Head::Agg(_)));
        match c.head {
            Head::Start | Head::List | Head::Top(..) if k == 0 => {
                s.subject = c.nouns.clone();
                s.subject_distinct = c.distinct;
                if let Head::Top(n, dir) = c.head {
                    s.top = Some((n, dir));
                }
            }
            Head::Count | Head::Agg(_) => {
                // "..., ordered by the number of publications": the same metric again.
                let after_order = k > 0
                    && matches!(clauses.list[k - 1].head, Head::OrderBy | Head::By)
                    && clauses.list[k - 1].nouns.is_empty();
                match s.metric {
                    None => s.metric = Some((c.head, &c.nouns, c.distinct)),
                    Some((head, nouns, distinct))
                        if after_order
                            && head == c.head
                            && distinct == c.distinct
                            && same_nouns(nouns, &c.nouns) => {}
                    Some(_) => {
                        return Err(Abstain::new(
                            "does not handle several aggregates in one question",
                        ));
                    }
                }
            }
            Head::Sup { dir, most } if s.sup.is_none() => {
                s.sup = Some((dir, most, &c.nouns));
                s.rank_by_metric |= c.nouns.is_empty() && next_is_metric;
            }
            Head::By if s.by.is_none() => {
                s.by = Some(&c.nouns);
                s.rank_by_metric |= c.nouns.is_empty() && next_is_metric && s.top.is_some();
            }
            Head::Each if !c.nouns.is_empty() => s.each.extend(&c.nouns),
            Head::OrderBy if s.order.is_none() && !c.nouns.is_empty() => s.order = Some(&c.nouns),
            Head::OrderBy if c.nouns.is_empty() && next_is_metric && s.metric.is_some() => {}
            _ => return Err(Abstain::new("could not follow the structure of the question")),
        }
    }
    Ok(s)
}

/// Builds a [`Query`] step by step, keeping the nouns that only name a table
/// ("of products") to check once every join is known.
struct Builder<'c, 's> {
    cat: &'c Catalog<'s>,
    q: Query,
    qualifiers: Vec<Noun>,
}

impl Builder<'_, '_> {
    fn shape(&mut self, clauses: &Clauses) -> Result<(), Abstain> {
        let s = shape(clauses)?;
        let ranking = s.top.is_some() || s.sup.is_some();
        if let Some((dir, most, nouns)) = s.sup
            && s.top.is_none()
            && s.subject.is_empty()
            && !s.rank_by_metric
        {
            // "the highest price of products": an aggregate, not a ranking.
            if s.metric.is_some() || most {
                return Err(Abstain::new("could not tell what to rank"));
            }
            let f = if dir == Dir::Desc { AggFn::Max } else { AggFn::Min };
            return self.aggregate(&s, Head::Agg(f), nouns, false, clauses);
        }
        if let Some((head, nouns, distinct)) = s.metric
            && !ranking
        {
            if !s.subject.is_empty() {
                return Err(Abstain::new(format!(
                    "could not tell what '{}' has to do with the question",
                    s.subject[0].text
                )));
            }
            return self.aggregate(&s, head, nouns, distinct, clauses);
        }
        if ranking {
            return self.ranking(&s, clauses);
        }
        self.list(&s, clauses)
    }

    /// A count or aggregate, for the whole table or per group.
    fn aggregate(
        &mut self,
        s: &Shape<'_>,
        head: Head,
        nouns: &[Noun],
        distinct: bool,
        clauses: &Clauses,
    ) -> Result<(), Abstain> {
        if s.order.is_some() || clauses.alphabetical {
            return Err(Abstain::new("does not handle sorting this kind of question"));
        }
        let metric = self.metric(head, nouns, distinct)?;
        let groups: Vec<&Noun> =
            s.by.unwrap_or_default().iter().chain(s.each.iter().copied()).collect();
        for g in &groups {
            self.group(g)?;
        }
        self.q.select.push(Output::Metric(metric));
        if groups.is_empty() {
            if clauses.direction.is_some() {
                return Err(Abstain::new("does not handle sorting a single number"));
            }
        } else {
            self.q.order = Some((Order::Metric(metric), clauses.direction.unwrap_or(Dir::Desc)));
        }
        Ok(())
    }

    /// The top rows by a column, or the top groups by a count or aggregate.
    fn ranking(&mut self, s: &Shape<'_>, clauses: &Clauses) -> Result<(), Abstain> {
        if !s.each.is_empty() || s.order.is_some() || clauses.alphabetical {
            return Err(Abstain::new("does not handle rankings within groups or sorted twice"));
        }
        let dir = match (s.sup, s.top) {
            (Some((d, ..)), _) | (None, Some((_, d))) => d,
            (None, None) => return Err(Abstain::new("could not tell what to rank")),
        };
        if clauses.direction.is_some_and(|d| d != dir) {
            return Err(Abstain::new("found two sort directions"));
        }
        let limit = match s.top {
            Some((n, _)) => Some(n),
            // "which product has the highest price": one; "which products ...": unclear.
            None if s.subject.first().is_some_and(|n| !n.plural) => Some(1),
            None if clauses.direction.is_some() => None,
            None => return Err(Abstain::new("could not tell how many rows to return")),
        };
        self.q.limit = limit;
        if s.rank_by_metric {
            let Some((head, nouns, distinct)) = s.metric else {
                return Err(Abstain::new("could not tell what to rank by"));
            };
            let metric = self.metric(head, nouns, distinct)?;
            return self.top_groups(s, metric, dir);
        }
        if s.metric.is_some() {
            return Err(Abstain::new("does not handle several aggregates in one question"));
        }
        let key = match (s.sup, s.by) {
            (Some((_, most, nouns)), None) if !nouns.is_empty() => {
                if most && is_table_like(&nouns[0]) {
                    // "the customer with the most orders": count the orders.
                    let metric = self.metric(Head::Count, nouns, false)?;
                    return self.top_groups(s, metric, dir);
                }
                nouns
            }
            (None, Some(nouns)) if !nouns.is_empty() => nouns,
            _ => return Err(Abstain::new("could not tell what to rank by")),
        };
        self.top_rows(s, key, dir)
    }

    fn top_groups(&mut self, s: &Shape<'_>, metric: Metric, dir: Dir) -> Result<(), Abstain> {
        let [group] = s.subject.as_slice() else {
            return Err(Abstain::new("could not tell what to rank"));
        };
        self.group(group)?;
        self.q.select.push(Output::Metric(metric));
        self.q.order = Some((Order::Metric(metric), dir));
        Ok(())
    }

    fn top_rows(&mut self, s: &Shape<'_>, key: &[Noun], dir: Dir) -> Result<(), Abstain> {
        let columns = self.subject(s)?;
        let order = self.pick_column(&key[0], "sort by", |_, c| {
            matches!(c.kind, Kind::Number | Kind::Date) && !c.is_key
        })?;
        self.qualifiers.extend(key[1..].iter().cloned());
        self.outputs_for_rows(columns);
        if !self.q.select.contains(&Output::Column(order)) && self.q.select != [Output::Star] {
            self.q.select.push(Output::Column(order));
        }
        self.q.order = Some((Order::Column(order), dir));
        Ok(())
    }

    fn list(&mut self, s: &Shape<'_>, clauses: &Clauses) -> Result<(), Abstain> {
        if s.by.is_some() || !s.each.is_empty() {
            return Err(Abstain::new("could not tell what to count or add up per group"));
        }
        let subject = self.subject(s)?;
        let columns = subject.0.clone();
        if s.subject_distinct {
            if columns.is_empty() || subject.1 {
                return Err(Abstain::new("could not tell which column to list distinct values of"));
            }
            self.q.distinct = true;
        }
        let order = match (s.order, clauses.alphabetical) {
            (Some(nouns), _) => {
                let col = self.pick_column(&nouns[0], "sort by", |_, _| true)?;
                self.qualifiers.extend(nouns[1..].iter().cloned());
                Some((col, clauses.direction.unwrap_or(Dir::Asc)))
            }
            (None, true) => {
                let text = columns.iter().copied().find(|&c| self.cat.column(c).kind == Kind::Text);
                let name = self.cat.readable_columns(self.q.from).into_iter().find(|&c| {
                    Some(c) != self.cat.tables[self.q.from].key
                        && self.cat.column((self.q.from, c)).kind == Kind::Text
                });
                let Some(col) = text.or(name.map(|c| (self.q.from, c))) else {
                    return Err(Abstain::new("could not tell which column to sort by"));
                };
                Some((col, clauses.direction.unwrap_or(Dir::Asc)))
            }
            (None, false) if clauses.direction.is_some() => {
                return Err(Abstain::new("could not tell which column to sort by"));
            }
            (None, false) => None,
        };
        self.outputs_for_rows(subject);
        self.q.order = order.map(|(c, d)| (Order::Column(c), d));
        Ok(())
    }

    /// The table the subject nouns name, and the columns they ask for; whether
    /// the rows themselves are asked for too ("the cities and their population").
    fn subject(&mut self, s: &Shape<'_>) -> Result<(Vec<ColId>, bool), Abstain> {
        let tables: Vec<usize> =
            (0..s.subject.len()).filter(|&k| is_table_like(&s.subject[k])).collect();
        if tables.is_empty() {
            return self.subject_columns(s);
        }
        let [table] = tables.as_slice() else {
            return Err(Abstain::new(match tables.len() {
                0 => "could not tell which table the question is about".to_owned(),
                _ => format!(
                    "could not tell whether the question is about '{}' or '{}'",
                    s.subject[tables[0]].text, s.subject[tables[1]].text
                ),
            }));
        };
        self.q.from = unique_table(&s.subject[*table])?;
        let mut columns = Vec::new();
        for (k, n) in s.subject.iter().enumerate() {
            if k != *table {
                columns.push(self.pick_column(n, "show", |_, _| true)?);
            }
        }
        Ok((columns, *table == 0))
    }

    /// Columns only ("the customer names and cities"): the one table that has them all.
    fn subject_columns(&mut self, s: &Shape<'_>) -> Result<(Vec<ColId>, bool), Abstain> {
        let best_tables = |n: &Noun| -> Vec<TableId> {
            let best = n.best_column_tier();
            n.columns.iter().filter(|c| c.1 == best && best >= 2).map(|c| c.0.0).collect()
        };
        let mut tables: Option<Vec<TableId>> = None;
        for n in &s.subject {
            let these = best_tables(n);
            tables = Some(match tables {
                None => these,
                Some(t) => t.into_iter().filter(|x| these.contains(x)).collect(),
            });
        }
        let mut tables = tables.unwrap_or_default();
        tables.dedup();
        let [table] = tables.as_slice() else {
            return Err(Abstain::new("could not tell which table the question is about"));
        };
        self.q.from = *table;
        let mut columns = Vec::new();
        for n in &s.subject {
            columns.push(self.pick_column(n, "show", |c, _| c.0 == *table)?);
        }
        Ok((columns, false))
    }

    fn outputs_for_rows(&mut self, (columns, rows): (Vec<ColId>, bool)) {
        let from = self.q.from;
        if columns.is_empty() || rows {
            if self.cat.has_name_column(from) {
                let readable = self.cat.readable_columns(from);
                self.q.select.extend(readable.into_iter().map(|c| Output::Column((from, c))));
            } else if let Some(key) = self.cat.tables[from].key.filter(|_| !columns.is_empty()) {
                self.q.select.push(Output::Column((from, key)));
            } else {
                self.q.select.push(Output::Star);
            }
        }
        for c in columns {
            if !self.q.select.contains(&Output::Column(c)) {
                self.q.select.push(Output::Column(c));
            }
        }
    }

    /// The metric a count or aggregate clause asks for; sets the main table.
    fn metric(&mut self, head: Head, nouns: &[Noun], distinct: bool) -> Result<Metric, Abstain> {
        let Some(first) = nouns.first() else {
            return Err(Abstain::new("could not tell what to count or add up"));
        };
        let context: Vec<TableId> = nouns[1..]
            .iter()
            .filter(|n| is_table_like(n))
            .flat_map(|n| n.tables.iter().map(|t| t.0))
            .collect();
        self.qualifiers.extend(nouns[1..].iter().cloned());
        match head {
            Head::Count if distinct => {
                let col = self.pick_any(first, &context, "count", |_, _| true)?;
                self.q.from = col.0;
                Ok(Metric::CountDistinct(col))
            }
            Head::Count => {
                if !is_table_like(first) {
                    return Err(Abstain::new(format!(
                        "could not tell which table '{}' means",
                        first.text
                    )));
                }
                self.q.from = unique_table(first)?;
                Ok(Metric::Count)
            }
            Head::Agg(f) => {
                let measure = |_: ColId, c: &ColumnInfo| match f {
                    AggFn::Sum | AggFn::Avg => c.kind == Kind::Number && !c.is_key,
                    AggFn::Max | AggFn::Min => {
                        matches!(c.kind, Kind::Number | Kind::Date) && !c.is_key
                    }
                };
                let col = self.pick_any(first, &context, "add up", measure)?;
                self.q.from = col.0;
                Ok(Metric::Agg(f, col))
            }
            _ => Err(Abstain::new("could not tell what to count or add up")),
        }
    }

    /// A column anywhere in the schema (the main table is not known yet),
    /// preferring the tables the question names.
    fn pick_any(
        &self,
        noun: &Noun,
        context: &[TableId],
        what: &str,
        ok: impl Fn(ColId, &ColumnInfo) -> bool,
    ) -> Result<ColId, Abstain> {
        let cands: Vec<(ColId, u8)> =
            noun.columns.iter().copied().filter(|&(c, _)| ok(c, self.cat.column(c))).collect();
        let best = best_of(&cands);
        if best.len() > 1 && !context.is_empty() {
            let narrowed: Vec<ColId> =
                best.iter().copied().filter(|c| context.contains(&c.0)).collect();
            if let [one] = narrowed.as_slice() {
                return Ok(*one);
            }
        }
        match best.as_slice() {
            [one] => Ok(*one),
            [] => Err(Abstain::new(format!(
                "could not tell which column to {what} for '{}'",
                noun.text
            ))),
            _ => Err(Abstain::new(format!("could not tell which column '{}' means", noun.text))),
        }
    }

    /// A column of the main table or a parent (joined as needed), preferring the main table.
    fn pick_column(
        &mut self,
        noun: &Noun,
        what: &str,
        ok: impl Fn(ColId, &ColumnInfo) -> bool,
    ) -> Result<ColId, Abstain> {
        let scope = self.scope();
        let cands: Vec<(ColId, u8)> = noun
            .columns
            .iter()
            .copied()
            .filter(|&(c, _)| scope.contains(&c.0) && ok(c, self.cat.column(c)))
            .collect();
        let best = best_of(&cands);
        let in_from: Vec<ColId> = best.iter().copied().filter(|c| c.0 == self.q.from).collect();
        // Then the tables the query joins already ("their name" after grouping by customer).
        let joined = self.q.tables();
        let in_joined: Vec<ColId> =
            best.iter().copied().filter(|c| joined.contains(&c.0)).collect();
        let col = match (in_from.as_slice(), in_joined.as_slice(), best.as_slice()) {
            ([one], ..) | ([], [one], _) | ([], [], [one]) => *one,
            (.., []) => {
                return Err(Abstain::new(format!(
                    "could not tell which column to {what} for '{}'",
                    noun.text
                )));
            }
            _ => {
                return Err(Abstain::new(format!(
                    "could not tell which column '{}' means",
                    noun.text
                )));
            }
        };
        self.q.join(self.cat, col.0);
        Ok(col)
    }

    /// The main table and its parents.
    fn scope(&self) -> Vec<TableId> {
        let from = self.q.from;
        std::iter::once(from)
            .chain(self.cat.tables[from].parents.iter().map(|l| l.parent))
            .collect()
    }

    /// Groups by a column of the main table or a parent, or by a parent table.
    fn group(&mut self, noun: &Noun) -> Result<(), Abstain> {
        let scope = self.scope();
        let from = self.q.from;
        let parents: Vec<(TableId, u8)> =
            noun.tables.iter().copied().filter(|&(t, _)| t != from && scope.contains(&t)).collect();
        let col_tier = noun
            .columns
            .iter()
            .filter(|(c, _)| scope.contains(&c.0))
            .map(|c| c.1)
            .max()
            .unwrap_or(0);
        let parent_tier = parents.iter().map(|p| p.1).max().unwrap_or(0);
        let names_from =
            noun.tables.iter().any(|&(t, tier)| t == from && tier >= col_tier.max(parent_tier));
        if names_from {
            return Err(Abstain::new(format!("could not tell how to group by '{}'", noun.text)));
        }
        if parent_tier >= 2 && parent_tier > col_tier {
            let best: Vec<TableId> =
                parents.iter().filter(|p| p.1 == parent_tier).map(|p| p.0).collect();
            let [parent] = best.as_slice() else {
                return Err(Abstain::new(format!(
                    "could not tell which table '{}' means",
                    noun.text
                )));
            };
            self.q.join(self.cat, *parent);
            let mut cols = self.cat.readable_columns(*parent);
            if cols.is_empty() {
                cols = self.cat.link(from, *parent).map(|l| l.parent_column).into_iter().collect();
            }
            for c in cols {
                self.q.select.push(Output::Column((*parent, c)));
                self.q.group_by.push((*parent, c));
            }
            return Ok(());
        }
        let col = self.pick_column(noun, "group by", |_, _| true)?;
        self.q.select.push(Output::Column(col));
        self.q.group_by.push(col);
        Ok(())
    }

    fn filter(&mut self, f: RawFilter) -> Result<(), Abstain> {
        let from = self.q.from;
        match f {
            RawFilter::Value { columns, text, label } => {
                let scope = self.scope();
                let mut cands: Vec<(ColId, String)> = columns
                    .into_iter()
                    .filter(|(c, _)| scope.contains(&c.0))
                    .filter(|(c, _)| {
                        label.as_ref().is_none_or(|l| l.columns.iter().any(|x| x.0 == *c))
                    })
                    .collect();
                if cands.iter().any(|(c, _)| c.0 == from) {
                    cands.retain(|(c, _)| c.0 == from);
                }
                let mut ids: Vec<ColId> = cands.iter().map(|c| c.0).collect();
                ids.dedup();
                match ids.as_slice() {
                    [col] => {
                        self.q.join(self.cat, col.0);
                        let exact =
                            cands.iter().find(|c| c.0 == *col).map_or(text, |c| c.1.clone());
                        self.q.filter_text(*col, exact);
                    }
                    [] => {
                        return Err(Abstain::new(format!(
                            "could not connect '{text}' to {}",
                            self.cat.table(from).name
                        )));
                    }
                    _ => {
                        return Err(Abstain::new(format!(
                            "could not tell which column '{text}' is in"
                        )));
                    }
                }
            }
            RawFilter::Literal { text, label, named } => {
                let col = match (label, named) {
                    (Some(l), _) => self.pick_column(&l, "compare", |_, c| c.kind == Kind::Text)?,
                    (None, true) => {
                        let key = self.cat.tables[from].key;
                        let names: Vec<usize> = self
                            .cat
                            .readable_columns(from)
                            .into_iter()
                            .filter(|&c| Some(c) != key)
                            .collect();
                        let [one] = names.as_slice() else {
                            return Err(Abstain::new(format!(
                                "could not tell which name '{text}' is"
                            )));
                        };
                        (from, *one)
                    }
                    (None, false) => {
                        return Err(Abstain::new(format!(
                            "could not tell which column '{text}' is in"
                        )));
                    }
                };
                self.q.filter_text(col, text);
            }
            RawFilter::Number { n, label } => {
                let numeric = |_: ColId, c: &ColumnInfo| c.kind == Kind::Number || c.is_key;
                let col = if label.columns.iter().any(|(c, _)| self.scope().contains(&c.0)) {
                    self.pick_column(&label, "compare", numeric)?
                } else {
                    let t = unique_table(&label)?;
                    let key = if t == from {
                        self.cat.tables[from].key.map(|k| (from, k))
                    } else {
                        self.cat.link(from, t).map(|l| (from, l.column))
                    };
                    key.ok_or_else(|| {
                        Abstain::new(format!("could not tell what '{} {n}' means", label.text))
                    })?
                };
                self.q.filters.push(Filter::Number(col, n));
            }
            RawFilter::Year(year) => {
                let info = &self.cat.tables[from];
                let year_col =
                    info.columns.iter().position(|c| c.kind == Kind::Number && c.words == ["year"]);
                let col = match year_col {
                    Some(c) => (from, c),
                    None => (from, self.only_date_column()?),
                };
                self.q.filters.push(Filter::Year(col, year));
            }
            RawFilter::Window { n, unit, label } => {
                let col = match label {
                    Some(l) => {
                        self.pick_column(&l, "compare", |c, i| c.0 == from && i.kind == Kind::Date)?
                    }
                    None => (from, self.only_date_column()?),
                };
                self.q.filters.push(Filter::Window(col, n, unit));
            }
        }
        Ok(())
    }

    fn only_date_column(&self) -> Result<usize, Abstain> {
        let from = self.q.from;
        let dates: Vec<usize> = (0..self.cat.tables[from].columns.len())
            .filter(|&c| self.cat.column((from, c)).kind == Kind::Date)
            .collect();
        match dates.as_slice() {
            [one] => Ok(*one),
            [] => {
                Err(Abstain::new(format!("found no date column in {}", self.cat.table(from).name)))
            }
            _ => Err(Abstain::new(format!(
                "could not tell which date column of {} to use",
                self.cat.table(from).name
            ))),
        }
    }

    /// Nouns that only named a table ("of products") must name one the query reads.
    fn check_qualifiers(&self) -> Result<(), Abstain> {
        let tables = self.q.tables();
        for n in &self.qualifiers {
            let ok = is_table_like(n) && unique_table(n).is_ok_and(|t| tables.contains(&t));
            if !ok {
                return Err(Abstain::new(format!(
                    "could not tell what '{}' has to do with the question",
                    n.text
                )));
            }
        }
        Ok(())
    }

    /// A sentence such as "Return the status and number of transactions":
    /// each thing named must be in the result already or fit in it.
    fn outputs(&mut self, q: &Question<'_>, items: &[Item]) -> Result<(), Abstain> {
        let Some(first) = items.first() else { return Ok(()) };
        let sentence_start = q.tokens.iter().find(|t| t.sentence == first.sentence);
        if !sentence_start.is_some_and(|t| OUTPUT_VERBS.contains(&t.lower.as_str())) {
            return Err(Abstain::new("does not handle more than one question at a time"));
        }
        let grouped = !self.q.group_by.is_empty();
        let mut pending: Option<Head> = None;
        for item in items {
            match &item.kind {
                ItemKind::Kw(Keyword::List) => {}
                ItemKind::Kw(Keyword::Unsupported) if q.tokens[item.token].lower == "both" => {}
                ItemKind::Kw(Keyword::Count) => pending = Some(Head::Count),
                ItemKind::Kw(Keyword::Agg(f)) => pending = Some(Head::Agg(*f)),
                ItemKind::Noun(n) => match pending.take() {
                    Some(Head::Count)
                        if n.tables.iter().any(|t| t.0 == self.q.from && t.1 >= 2) =>
                    {
                        if !grouped {
                            return Err(Abstain::new(format!(
                                "could not add '{}' to the result",
                                n.text
                            )));
                        }
                        if !self.q.select.contains(&Output::Metric(Metric::Count)) {
                            self.q.select.push(Output::Metric(Metric::Count));
                        }
                    }
                    Some(head) => {
                        let from = self.q.from;
                        let metric = self.output_metric(head, n)?;
                        let same_table = match metric {
                            Metric::Count => {
                                is_table_like(n) && unique_table(n).is_ok_and(|t| t == from)
                            }
                            Metric::CountDistinct(c) | Metric::Agg(_, c) => c.0 == from,
                        };
                        if !same_table || !grouped {
                            return Err(Abstain::new(format!(
                                "could not add '{}' to the result",
                                n.text
                            )));
                        }
                        if !self.q.select.contains(&Output::Metric(metric)) {
                            self.q.select.push(Output::Metric(metric));
                        }
                    }
                    None => self.output_noun(n, grouped)?,
                },
                _ => return Err(unsupported(q, item)),
            }
        }
        if pending.is_some() {
            return Err(Abstain::new("could not tell what to return"));
        }
        Ok(())
    }

    /// A count or aggregate named in an output sentence, over the main table.
    fn output_metric(&mut self, head: Head, n: &Noun) -> Result<Metric, Abstain> {
        let from = self.q.from;
        let metric = match head {
            Head::Agg(f) => {
                let col = self.pick_any(n, &[from], "add up", |c, i| {
                    c.0 == from && i.kind == Kind::Number && !i.is_key
                })?;
                Metric::Agg(f, col)
            }
            _ => self.metric(head, std::slice::from_ref(n), false)?,
        };
        self.q.from = from;
        Ok(metric)
    }

    fn output_noun(&mut self, n: &Noun, grouped: bool) -> Result<(), Abstain> {
        let tables = self.q.tables();
        if is_table_like(n) && unique_table(n).is_ok_and(|t| tables.contains(&t)) {
            return Ok(());
        }
        let col = self.pick_column(n, "return", |_, _| true)?;
        if self.q.select.contains(&Output::Column(col)) || self.q.group_by.contains(&col) {
            return Ok(());
        }
        if self.q.select.contains(&Output::Star) && col.0 == self.q.from {
            return Ok(());
        }
        if grouped {
            // Only another column of a parent grouped by its key fits the groups.
            let key = self.cat.tables[col.0].key;
            let by_parent_key =
                col.0 != self.q.from && key.is_some_and(|k| self.q.group_by.contains(&(col.0, k)));
            if !by_parent_key {
                return Err(Abstain::new(format!("could not add '{}' to the result", n.text)));
            }
            self.q.group_by.push(col);
        }
        let at = self
            .q
            .select
            .iter()
            .position(|o| matches!(o, Output::Metric(_)))
            .unwrap_or(self.q.select.len());
        self.q.select.insert(at, Output::Column(col));
        Ok(())
    }
}

/// Whether two lists of nouns name the same things.
fn same_nouns(a: &[Noun], b: &[Noun]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            let ids = |n: &Noun| (n.tables.clone(), n.columns.clone());
            ids(x) == ids(y)
        })
}

/// Whether a noun names a table at least as well as any column.
fn is_table_like(n: &Noun) -> bool {
    let t = n.best_table_tier();
    t >= 2 && t >= n.best_column_tier()
}

fn unique_table(n: &Noun) -> Result<TableId, Abstain> {
    let best = n.best_table_tier();
    let tables: Vec<TableId> = n.tables.iter().filter(|t| t.1 == best).map(|t| t.0).collect();
    match tables.as_slice() {
        [one] if best >= 2 => Ok(*one),
        _ => Err(Abstain::new(format!("could not tell which table '{}' means", n.text))),
    }
}

/// The candidates of the best tier; a weak match (tier 1) only when it is the only one.
fn best_of(cands: &[(ColId, u8)]) -> Vec<ColId> {
    let best = cands.iter().map(|c| c.1).max().unwrap_or(0);
    let out: Vec<ColId> = cands.iter().filter(|c| c.1 == best).map(|c| c.0).collect();
    if best <= 1 && cands.len() > 1 { Vec::new() } else { out }
}
