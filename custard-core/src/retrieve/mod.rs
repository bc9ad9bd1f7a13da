//! Schema retrieval: ranks tables and columns for a question by lexical
//! relevance and keeps the best ones that fit a prompt's token budget.
//!
//! Scoring is BM25F over tables: every word of a table's name, comment, column
//! names, column comments and sample values is a term of that table, weighted
//! by where it occurs (table name > column name > comments > samples), with
//! inverse document frequencies computed once when the index is built.
//! Question words also match prefixes (`cust` for "customer"), vowel-less
//! abbreviations (`qty`), a few listed abbreviations and synonyms, with less
//! strength than an exact match; multi-word sample values and column names
//! score as phrases too; a time span ("last 30 days") counts little. Tables
//! linked by a foreign key to a matched table get a share of its score, and a
//! junction table joining two kept tables is kept with them. Where a namespace
//! declares no foreign key at all, joins are inferred from key-like column
//! names (`car_id` to `cars`, a shared `flight_id`).
//!
//! A retrieval reads only the postings of the question's words (and their
//! prefix matches, found by range search in the sorted vocabulary), so it takes
//! milliseconds on 10,000 tables.

mod index;
mod query;
mod select;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use self::index::{Field, Index};
use self::query::{Sequence, Term};
use crate::{DdlOptions, Schema};

/// A schema indexed once for ranking tables and columns against questions.
///
/// ```
/// use custard_core::{Column, Dialect, RetrieveOptions, Schema, SchemaIndex, Table, TableKind};
///
/// let column = |name: &str| Column {
///     name: name.into(),
///     data_type: "text".into(),
///     nullable: true,
///     default: None,
///     comment: None,
///     sample_values: Vec::new(),
/// };
/// let table = |name: &str, columns: &[&str]| Table {
///     schema: "public".into(),
///     name: name.into(),
///     kind: TableKind::Table,
///     comment: None,
///     columns: columns.iter().map(|c| column(c)).collect(),
///     primary_key: Vec::new(),
///     foreign_keys: Vec::new(),
///     row_estimate: None,
/// };
/// let schema = Schema {
///     dialect: Dialect::Postgres,
///     tables: vec![table("customers", &["id", "cust_nm"]), table("invoices", &["id", "total"])],
/// };
/// let index = SchemaIndex::new(schema);
/// let found = index.retrieve("names of our customers", &RetrieveOptions::default());
/// assert_eq!(found.table_names()[0], "public.customers");
/// ```
#[derive(Debug)]
pub struct SchemaIndex {
    schema: Schema,
    index: Index,
}

/// Limits and context for one retrieval.
#[derive(Clone, Debug)]
pub struct RetrieveOptions {
    /// The most tokens the rendered schema may take in the prompt.
    pub token_budget: usize,
    /// The most tables to keep, however small they are.
    pub max_tables: usize,
    /// Earlier questions of the conversation, so follow-ups keep their tables.
    pub context: Vec<String>,
    /// How the kept tables are rendered.
    pub ddl: DdlOptions,
}

impl Default for RetrieveOptions {
    fn default() -> Self {
        RetrieveOptions {
            token_budget: 2000,
            max_tables: 12,
            context: Vec::new(),
            ddl: DdlOptions::default(),
        }
    }
}

/// The part of a schema relevant to a question.
#[derive(Clone, Debug)]
pub struct Retrieved {
    /// The kept tables (with only their kept columns), most relevant first.
    pub schema: Schema,
    /// `schema.table` and its score, for every kept table, most relevant first.
    pub scores: Vec<(String, f64)>,
    /// The kept tables rendered as compact DDL for the prompt.
    pub ddl: String,
    /// Estimated tokens of `ddl`.
    pub estimated_tokens: usize,
}

impl Retrieved {
    /// `schema.table` of every kept table, most relevant first.
    pub fn table_names(&self) -> Vec<String> {
        self.schema.tables.iter().map(|t| format!("{}.{}", t.schema, t.name)).collect()
    }
}

/// Share of a matched table's score given to the tables its foreign keys reference.
const REFERENCED_SHARE: f64 = 0.3;
/// Share of a matched table's score given to the tables referencing it.
const REFERENCING_SHARE: f64 = 0.15;
/// Extra weight of a table whose name's words all occur in the question.
const NAME_COVERED: f64 = 1.0;
/// Extra weight of a multi-word sample value found as a phrase in the question.
const SAMPLE_PHRASE: f64 = 1.5;
/// Extra weight of a multi-word column name found as a phrase in the question.
const COLUMN_PHRASE: f64 = 0.5;

/// Per-question scores: tables ranked, and what is needed to score columns.
#[derive(Debug, Default)]
struct Scored {
    /// Matched tables (and their foreign-key neighbours), best first.
    ranked: Vec<(u32, f64)>,
    /// For each matched token, the most any question word gains from it.
    gains: HashMap<u32, f64>,
    /// Phrase bonuses by (table, column).
    phrases: HashMap<(u32, u32), f64>,
}

impl SchemaIndex {
    /// Indexes `schema`: builds the vocabulary, postings and foreign-key graph.
    pub fn new(schema: Schema) -> Self {
        let index = Index::build(&schema);
        SchemaIndex { schema, index }
    }

    /// The indexed schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Ranks tables for `question` and keeps what fits the budget.
    ///
    /// When nothing matches, the tables with the most foreign-key neighbours
    /// are kept instead, so the model still sees the schema's core.
    pub fn retrieve(&self, question: &str, options: &RetrieveOptions) -> Retrieved {
        let (terms, sequences) = query::terms(question, &options.context);
        let mut scored = self.score(&terms, &sequences);
        if scored.ranked.is_empty() {
            scored.ranked = self.index.hubs.iter().map(|t| (*t, 0.0)).collect();
        }
        let kept = select::select(self, &scored, options);
        let scores = kept
            .iter()
            .map(|(table, score)| (format!("{}.{}", table.schema, table.name), *score))
            .collect();
        let schema = Schema {
            dialect: self.schema.dialect,
            tables: kept.into_iter().map(|k| k.0).collect(),
        };
        let ddl = schema.to_ddl(&options.ddl);
        Retrieved { estimated_tokens: crate::text::estimate_tokens(&ddl), schema, scores, ddl }
    }

    /// Scores every table sharing a token with the question, through postings only.
    fn score(&self, terms: &[Term], sequences: &[Sequence]) -> Scored {
        let n = self.schema.tables.len();
        let mut total = vec![0.0f64; n];
        let mut touched: Vec<u32> = Vec::new();
        let mut best = vec![0.0f64; n];
        let mut best_touched: Vec<u32> = Vec::new();
        let mut gains: HashMap<u32, f64> = HashMap::new();
        // Matches in table names, so only tables that may be named in full are checked.
        let mut name_hits = vec![0u16; n];
        for term in terms {
            for (token, strength) in query::expand(&self.index, &term.word) {
                let gain = term.weight * strength * self.index.idf(token);
                let g = gains.entry(token).or_insert(0.0);
                *g = g.max(gain);
                let postings = self.index.postings(token);
                let mut i = 0;
                while i < postings.len() {
                    let table = postings[i].table;
                    let mut sum = 0.0;
                    while let Some(p) = postings.get(i).filter(|p| p.table == table) {
                        sum += self.index.field_score(table, p.field, p.tf);
                        if p.field == Field::TableName {
                            name_hits[table as usize] = name_hits[table as usize].saturating_add(1);
                        }
                        i += 1;
                    }
                    let slot = &mut best[table as usize];
                    if *slot == 0.0 {
                        best_touched.push(table);
                    }
                    // A word counts once per table: through its best-matching token.
                    *slot = slot.max(gain * sum);
                }
            }
            add_best(&mut best, &mut best_touched, &mut total, &mut touched);
        }

        // A table whose whole name the question names is what it asks about.
        for &table in &touched {
            let name = &self.index.tables[table as usize].name;
            if usize::from(name_hits[table as usize]) < name.len() {
                continue;
            }
            let covered: Option<f64> = name.iter().map(|t| gains.get(t).copied()).sum();
            if let Some(gain) = covered {
                total[table as usize] += NAME_COVERED * gain;
            }
        }

        let phrases = self.match_phrases(sequences);
        // A table counts its best phrase once; `best` is all zeros again here.
        for (&(table, _), &bonus) in &phrases {
            let slot = &mut best[table as usize];
            if *slot == 0.0 {
                best_touched.push(table);
            }
            *slot = slot.max(bonus);
        }
        add_best(&mut best, &mut best_touched, &mut total, &mut touched);

        // Foreign-key neighbours of matched tables get a share of their score.
        let mut share = best;
        let mut shared: Vec<u32> = Vec::new();
        for &table in &touched {
            let score = total[table as usize];
            let entry = &self.index.tables[table as usize];
            let neighbours = entry
                .references
                .iter()
                .map(|n| (*n, REFERENCED_SHARE))
                .chain(entry.referenced_by.iter().map(|n| (*n, REFERENCING_SHARE)));
            for (neighbour, fraction) in neighbours {
                let slot = &mut share[neighbour as usize];
                if *slot == 0.0 {
                    shared.push(neighbour);
                }
                *slot = slot.max(fraction * score);
            }
        }
        for table in shared {
            let t = table as usize;
            if total[t] == 0.0 {
                touched.push(table);
            }
            total[t] += share[t];
        }

        let mut ranked: Vec<(u32, f64)> =
            touched.into_iter().map(|t| (t, total[t as usize])).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Scored { ranked, gains, phrases }
    }

    /// Multi-word sample values and column names found word for word in a text.
    fn match_phrases(&self, sequences: &[Sequence]) -> HashMap<(u32, u32), f64> {
        let mut found: HashMap<(u32, u32), f64> = HashMap::new();
        for seq in sequences {
            let ids: Vec<Option<u32>> = seq.words.iter().map(|w| self.index.id(w)).collect();
            for (i, pair) in ids.windows(2).enumerate() {
                let [Some(first), Some(second)] = *pair else { continue };
                for phrase in self.index.phrases(first, second) {
                    let matches = phrase.tokens.len() <= ids.len() - i
                        && phrase.tokens.iter().zip(&ids[i..]).all(|(t, q)| Some(*t) == *q);
                    if !matches {
                        continue;
                    }
                    let idf: f64 = phrase.tokens.iter().map(|t| self.index.idf(*t)).sum();
                    let weight = if phrase.sample { SAMPLE_PHRASE } else { COLUMN_PHRASE };
                    let bonus = seq.weight * weight * idf;
                    let slot = found.entry((phrase.table, phrase.column)).or_insert(0.0);
                    *slot = slot.max(bonus);
                }
            }
        }
        found
    }

    /// How well each column of `table` matches the question (0 for no match).
    fn column_scores(&self, table: u32, scored: &Scored) -> Vec<f64> {
        let gain = |ids: &[u32], field: Field| -> f64 {
            ids.iter().filter_map(|id| scored.gains.get(id)).sum::<f64>() * field.weight()
        };
        self.index.tables[table as usize]
            .columns
            .iter()
            .enumerate()
            .map(|(c, col)| {
                gain(&col.name, Field::ColumnName)
                    + gain(&col.comment, Field::ColumnComment)
                    + gain(&col.samples, Field::Sample)
                    + scored.phrases.get(&(table, c as u32)).copied().unwrap_or(0.0)
            })
            .collect()
    }
}

/// Adds each touched table's best score to its total and clears `best` for the
/// next round, noting tables that scored for the first time.
fn add_best(
    best: &mut [f64],
    best_touched: &mut Vec<u32>,
    total: &mut [f64],
    touched: &mut Vec<u32>,
) {
    for table in best_touched.drain(..) {
        let t = table as usize;
        if total[t] == 0.0 {
            touched.push(table);
        }
        total[t] += best[t];
        best[t] = 0.0;
    }
}
