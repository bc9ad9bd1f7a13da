//! Cutting ranked tables to the token budget: whole tables in rank order while
//! they fit, wide ones trimmed to their key and matched columns, junction
//! tables pulled in next to the tables they join.

use super::{RetrieveOptions, SchemaIndex, Scored};
use crate::text::estimate_tokens;
use crate::{Schema, Table};

/// Leading columns kept in a trimmed table besides key and matched ones.
const FIRST_FEW: usize = 3;
/// Stop looking after this many ranked tables in a row did not fit.
const MAX_MISSES: usize = 24;

/// The kept tables (trimmed copies) with their scores, in order.
pub(super) fn select(
    index: &SchemaIndex,
    scored: &Scored,
    options: &RetrieveOptions,
) -> Vec<(Table, f64)> {
    let mut cut = Cut {
        index,
        scored,
        options,
        kept: Vec::new(),
        kept_ids: Vec::new(),
        chars: 0,
        scratch: Schema::new(index.schema.dialect),
    };
    let max_tables = options.max_tables.max(1);
    let mut misses = 0;
    for &(table, score) in &scored.ranked {
        if cut.kept.len() >= max_tables || misses >= MAX_MISSES || cut.is_full() {
            break;
        }
        if cut.kept_ids.contains(&table) {
            continue;
        }
        if !cut.add(table, score) {
            misses += 1;
            continue;
        }
        misses = 0;
        // A junction table referencing this one and an earlier kept one joins them.
        for &bridge in &index.index.tables[table as usize].referenced_by {
            if cut.kept.len() >= max_tables {
                break;
            }
            let entry = &index.index.tables[bridge as usize];
            let joins = entry.references.iter().any(|other| {
                *other != table && cut.kept_ids.contains(other) && entry.joins(table, *other)
            });
            if joins && !cut.kept_ids.contains(&bridge) {
                cut.add(bridge, score);
            }
        }
    }
    cut.kept
}

/// The tables kept so far and the budget they use.
struct Cut<'a> {
    index: &'a SchemaIndex,
    scored: &'a Scored,
    options: &'a RetrieveOptions,
    kept: Vec<(Table, f64)>,
    kept_ids: Vec<u32>,
    /// Characters of the DDL of the kept tables, with the newlines between them.
    chars: usize,
    /// A one-table schema used to render candidates.
    scratch: Schema,
}

impl Cut<'_> {
    /// Whether no further table could fit (the smallest takes about 8 tokens).
    fn is_full(&self) -> bool {
        !self.kept.is_empty() && self.chars.div_ceil(4) + 8 > self.options.token_budget
    }

    /// Keeps `table` whole, or trimmed, if it fits; the first table is always kept.
    fn add(&mut self, table: u32, score: f64) -> bool {
        let full = &self.index.schema.tables[table as usize];
        let columns = self.index.column_scores(table, self.scored);
        let priority = priority(full, &columns);
        let important = priority.iter().take_while(|p| p.1 != Rank::Other).count();
        let trimmed = important + FIRST_FEW.min(priority.len() - important);
        if !self.kept.is_empty() {
            // Whole, then key, matched and leading columns, then key and matched only.
            let mut attempts = vec![priority.len()];
            for keep in [trimmed, important] {
                if keep > 0 && keep < *attempts.last().unwrap_or(&0) {
                    attempts.push(keep);
                }
            }
            for keep in attempts {
                if let Some((copy, chars)) = self.fits(full, &priority[..keep]) {
                    self.push(table, copy, score, chars);
                    return true;
                }
            }
            return false;
        }
        if let Some((copy, chars)) = self.fits(full, &priority) {
            self.push(table, copy, score, chars);
            return true;
        }
        // The best table is kept whatever the budget: as many columns as fit, but
        // at least its key and best-matching column (or its first column).
        let least = priority.iter().take_while(|p| p.1 <= Rank::BestMatch).count().max(1);
        for keep in (least.min(trimmed) + 1..=trimmed).rev() {
            if let Some((copy, chars)) = self.fits(full, &priority[..keep]) {
                self.push(table, copy, score, chars);
                return true;
            }
        }
        let copy = with_columns(full, &priority[..least.min(priority.len())]);
        let chars = self.render_chars(copy.clone());
        self.push(table, copy, score, chars);
        true
    }

    fn push(&mut self, table: u32, copy: Table, score: f64, chars: usize) {
        if !self.kept.is_empty() {
            self.chars += 1;
        }
        self.chars += chars;
        self.kept.push((copy, score));
        self.kept_ids.push(table);
    }

    /// `table` with `columns` and its rendered size, if adding it keeps within budget.
    fn fits(&mut self, table: &Table, columns: &[(usize, Rank)]) -> Option<(Table, usize)> {
        let separator = usize::from(!self.kept.is_empty());
        let (used, budget) = (self.chars + separator, self.options.token_budget);
        let within = |chars: usize| (used + chars).div_ceil(4) <= budget;
        // Skip rendering what cannot fit: names and types alone are too long.
        if !within(min_chars(table, columns)) {
            return None;
        }
        let copy = with_columns(table, columns);
        let chars = self.render_chars(copy.clone());
        debug_assert!(min_chars(table, columns) <= chars, "{}", table.name);
        within(chars).then_some((copy, chars))
    }

    fn render_chars(&mut self, table: Table) -> usize {
        self.scratch.tables.clear();
        self.scratch.tables.push(table);
        let ddl = self.scratch.to_ddl(&self.options.ddl);
        // `estimate_tokens` counts characters; summing characters keeps the total exact.
        debug_assert_eq!(estimate_tokens(&ddl), ddl.chars().count().div_ceil(4));
        ddl.chars().count()
    }
}

/// A lower bound of the rendered size of `table` with `columns`: every
/// rendering has `CREATE VIEW name (` or longer, `);` and a `name type` line
/// per column.
fn min_chars(table: &Table, columns: &[(usize, Rank)]) -> usize {
    let lines: usize = columns
        .iter()
        .map(|(i, _)| {
            let c = &table.columns[*i];
            c.name.chars().count() + c.data_type.chars().count() + 4
        })
        .sum();
    "CREATE VIEW  (\n);\n".len() + table.name.chars().count() + lines
}

/// Why a column is kept when its table is trimmed, most important first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    PrimaryKey,
    BestMatch,
    ForeignKey,
    Matched,
    Other,
}

/// Column indices, most important first: primary key, the best-matching
/// column, foreign keys, other matched columns (best first), then the rest in
/// table order.
fn priority(table: &Table, scores: &[f64]) -> Vec<(usize, Rank)> {
    let score = |i: usize| scores.get(i).copied().unwrap_or(0.0);
    let best = (0..table.columns.len())
        .filter(|i| score(*i) > 0.0 && !table.primary_key.contains(&table.columns[*i].name))
        .max_by(|a, b| score(*a).total_cmp(&score(*b)).then(b.cmp(a)));
    let mut out: Vec<(usize, Rank)> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let rank = if table.primary_key.contains(&c.name) {
                Rank::PrimaryKey
            } else if best == Some(i) {
                Rank::BestMatch
            } else if table.foreign_keys.iter().any(|fk| fk.columns.contains(&c.name)) {
                Rank::ForeignKey
            } else if score(i) > 0.0 {
                Rank::Matched
            } else {
                Rank::Other
            };
            (i, rank)
        })
        .collect();
    out.sort_by(|a, b| {
        a.1.cmp(&b.1).then_with(|| score(b.0).total_cmp(&score(a.0))).then(a.0.cmp(&b.0))
    });
    out
}

/// A copy of `table` with only `columns` (in table order), and the keys they still cover.
fn with_columns(table: &Table, columns: &[(usize, Rank)]) -> Table {
    if columns.len() == table.columns.len() {
        return table.clone();
    }
    let mut keep: Vec<usize> = columns.iter().map(|c| c.0).collect();
    keep.sort_unstable();
    let columns: Vec<_> = keep.iter().map(|i| table.columns[*i].clone()).collect();
    let has = |name: &String| columns.iter().any(|c| c.name == *name);
    let primary_key =
        if table.primary_key.iter().all(has) { table.primary_key.clone() } else { Vec::new() };
    let foreign_keys =
        table.foreign_keys.iter().filter(|fk| fk.columns.iter().all(has)).cloned().collect();
    Table {
        schema: table.schema.clone(),
        name: table.name.clone(),
        kind: table.kind,
        comment: table.comment.clone(),
        columns,
        primary_key,
        foreign_keys,
        row_estimate: table.row_estimate,
    }
}
