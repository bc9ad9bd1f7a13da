//! The inverted index built once per schema: every word of table names,
//! comments, column names and sample values, with the tables it occurs in.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::text::words;
use crate::{Schema, Table};

/// Where in a table a word occurs; each place has its own weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Field {
    /// The table's name.
    TableName,
    /// The table's schema (namespace), when it is not the dialect's default.
    Namespace,
    /// The table's comment.
    TableComment,
    /// A column's name.
    ColumnName,
    /// The name of a key-like column (`customer_id`), which mostly names another table.
    KeyColumnName,
    /// A column's comment.
    ColumnComment,
    /// A column's sample values.
    Sample,
}

impl Field {
    /// How much a match in this field counts, relative to a column comment.
    pub(super) fn weight(self) -> f64 {
        match self {
            Field::TableName => 3.0,
            Field::Namespace => 0.5,
            Field::TableComment => 1.0,
            Field::ColumnName => 1.5,
            Field::KeyColumnName => 0.75,
            Field::ColumnComment => 0.8,
            Field::Sample => 0.6,
        }
    }

    /// Whether term frequency in this field is normalized by the table's length.
    fn length_normalized(self) -> bool {
        !matches!(self, Field::TableName | Field::Namespace)
    }
}

/// One (token, table, field) occurrence count.
#[derive(Clone, Copy, Debug)]
pub(super) struct Posting {
    /// Index of the table in the schema.
    pub(super) table: u32,
    /// Where in the table the token occurs.
    pub(super) field: Field,
    /// How many times it occurs there.
    pub(super) tf: u16,
}

/// A multi-word sample value or column name, matched only as a whole.
#[derive(Clone, Debug)]
pub(super) struct Phrase {
    /// The phrase's token ids, in order.
    pub(super) tokens: Box<[u32]>,
    /// Index of the table in the schema.
    pub(super) table: u32,
    /// Index of the column in the table.
    pub(super) column: u32,
    /// Whether the phrase is a sample value (else a column name).
    pub(super) sample: bool,
}

/// The tokens of one column, for scoring columns of the few kept tables.
#[derive(Clone, Debug, Default)]
pub(super) struct ColumnTokens {
    /// Distinct tokens of the column's name.
    pub(super) name: Box<[u32]>,
    /// Distinct tokens of the column's comment.
    pub(super) comment: Box<[u32]>,
    /// Distinct tokens of the column's sample values.
    pub(super) samples: Box<[u32]>,
}

/// What the index keeps per table besides postings.
#[derive(Clone, Debug)]
pub(super) struct TableEntry {
    /// BM25 length normalization: 1 for a table of average length.
    pub(super) norm: f64,
    /// Tables this one references through foreign keys (distinct, not itself).
    pub(super) references: Vec<u32>,
    /// Tables referencing this one through foreign keys (distinct, not itself).
    pub(super) referenced_by: Vec<u32>,
    /// Each referenced table with the index of the column referencing it.
    links: Vec<(u32, u32)>,
    /// Distinct tokens of the table's name.
    pub(super) name: Box<[u32]>,
    /// Column tokens, in column order.
    pub(super) columns: Vec<ColumnTokens>,
}

/// The inverted index over one schema.
#[derive(Debug)]
pub(super) struct Index {
    /// Token strings by id.
    tokens: Vec<String>,
    /// Token ids by string.
    ids: HashMap<String, u32>,
    /// Token ids sorted by string, for prefix range search.
    sorted: Vec<u32>,
    /// Ids of tokens shaped like an abbreviation (`qty`, `nm`), sorted by string.
    abbreviations: Vec<u32>,
    /// (token id, byte offset) of every inner suffix of a long token, sorted by
    /// the suffix, to find words glued inside names (`customer` in `sbcustomer`).
    inner: Vec<(u32, u32)>,
    /// Postings by token id, ordered by table.
    postings: Vec<Vec<Posting>>,
    /// Inverse document frequency (over tables) by token id.
    idf: Vec<f64>,
    /// Multi-word phrases by their first two token ids.
    phrases: HashMap<(u32, u32), Vec<Phrase>>,
    /// Per-table data, in schema order.
    pub(super) tables: Vec<TableEntry>,
    /// Tables by number of foreign-key neighbours, most connected first.
    pub(super) hubs: Vec<u32>,
}

/// BM25 term-frequency saturation.
const K1: f64 = 1.2;
/// BM25 length normalization strength; low because wide tables are often the
/// important fact tables.
const B: f64 = 0.3;

impl Index {
    /// Indexes every table of `schema`.
    pub(super) fn build(schema: &Schema) -> Self {
        let mut builder = Builder::default();
        let default_schema = schema.dialect.default_schema();
        let mut lengths = Vec::with_capacity(schema.tables.len());
        let mut tables = Vec::with_capacity(schema.tables.len());
        for (i, table) in schema.tables.iter().enumerate() {
            let (length, columns) = builder.add_table(i as u32, table, default_schema);
            lengths.push(length);
            tables.push(TableEntry {
                norm: 1.0,
                references: Vec::new(),
                referenced_by: Vec::new(),
                links: Vec::new(),
                name: distinct(&builder.intern_all(&table.name)).into(),
                columns,
            });
        }
        let avg = lengths.iter().sum::<usize>() as f64 / lengths.len().max(1) as f64;
        for (entry, len) in tables.iter_mut().zip(&lengths) {
            entry.norm = 1.0 - B + B * (*len as f64) / avg.max(1.0);
        }
        link_foreign_keys(schema, &mut tables);
        infer_joins(schema, &mut tables);
        let hubs = hubs(&tables);

        let Builder { tokens, ids, postings, phrases, .. } = builder;
        let n = schema.tables.len() as f64;
        let idf = postings
            .iter()
            .map(|list| {
                let mut df = 0usize;
                let mut last = None;
                for p in list {
                    if last != Some(p.table) {
                        df += 1;
                        last = Some(p.table);
                    }
                }
                let df = df as f64;
                (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
            })
            .collect();
        let mut sorted: Vec<u32> = (0..tokens.len() as u32).collect();
        sorted.sort_unstable_by(|a, b| tokens[*a as usize].cmp(&tokens[*b as usize]));
        let abbreviations = sorted
            .iter()
            .copied()
            .filter(|id| is_abbreviation_shaped(&tokens[*id as usize]))
            .collect();
        let inner = inner_suffixes(&tokens);
        Index { tokens, ids, sorted, abbreviations, inner, postings, idf, phrases, tables, hubs }
    }

    /// The id of an exact token.
    pub(super) fn id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    /// The string of a token id.
    pub(super) fn token(&self, id: u32) -> &str {
        &self.tokens[id as usize]
    }

    /// The postings of a token id.
    pub(super) fn postings(&self, id: u32) -> &[Posting] {
        &self.postings[id as usize]
    }

    /// The inverse document frequency of a token id.
    pub(super) fn idf(&self, id: u32) -> f64 {
        self.idf[id as usize]
    }

    /// Phrases starting with two token ids.
    pub(super) fn phrases(&self, first: u32, second: u32) -> &[Phrase] {
        self.phrases.get(&(first, second)).map_or(&[], Vec::as_slice)
    }

    /// Token ids starting with `prefix`, in string order.
    pub(super) fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = u32> + 'a {
        prefix_range(&self.tokens, &self.sorted, prefix)
    }

    /// Ids of tokens that hold `word` after their first character (`sbcustomer`
    /// holds "customer"), for names whose words were glued together.
    pub(super) fn containing<'a>(&'a self, word: &'a str) -> impl Iterator<Item = u32> + 'a {
        let suffix = |e: &(u32, u32)| &self.tokens[e.0 as usize][e.1 as usize..];
        let start = self.inner.partition_point(|e| suffix(e) < word);
        self.inner[start..].iter().take_while(move |e| suffix(e).starts_with(word)).map(|e| e.0)
    }

    /// Abbreviation-shaped token ids starting with `prefix`, in string order.
    pub(super) fn abbreviations_with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = u32> + 'a {
        prefix_range(&self.tokens, &self.abbreviations, prefix)
    }

    /// The BM25F contribution of `tf` occurrences in `field` of table `table`.
    pub(super) fn field_score(&self, table: u32, field: Field, tf: u16) -> f64 {
        let norm = if field.length_normalized() { self.tables[table as usize].norm } else { 1.0 };
        let tf = f64::from(tf);
        field.weight() * tf * (K1 + 1.0) / (tf + K1 * norm)
    }
}

/// The shortest word looked for inside a longer token.
pub(super) const MIN_INNER_WORD: usize = 5;

/// Inner suffixes (not starting at 0) of tokens, leaving at least
/// [`MIN_INNER_WORD`] characters, sorted by suffix.
fn inner_suffixes(tokens: &[String]) -> Vec<(u32, u32)> {
    let mut inner: Vec<(u32, u32)> = Vec::new();
    for (id, token) in tokens.iter().enumerate() {
        let starts: Vec<usize> = token.char_indices().map(|(i, _)| i).collect();
        let chars = starts.len();
        for (k, &offset) in starts.iter().enumerate().skip(1) {
            if chars - k < MIN_INNER_WORD {
                break;
            }
            inner.push((id as u32, offset as u32));
        }
    }
    inner.sort_unstable_by(|a, b| {
        tokens[a.0 as usize][a.1 as usize..].cmp(&tokens[b.0 as usize][b.1 as usize..])
    });
    inner
}

/// The ids in `sorted` whose token starts with `prefix`.
fn prefix_range<'a>(
    tokens: &'a [String],
    sorted: &'a [u32],
    prefix: &'a str,
) -> impl Iterator<Item = u32> + 'a {
    let start = sorted.partition_point(|id| tokens[*id as usize].as_str() < prefix);
    sorted[start..].iter().copied().take_while(move |id| tokens[*id as usize].starts_with(prefix))
}

/// Short vowel-less tokens (`qty`, `amt`, `nm`, `dt`) are usually abbreviations.
fn is_abbreviation_shaped(token: &str) -> bool {
    let len = token.chars().count();
    (2..=4).contains(&len)
        && token.chars().all(|c| c.is_ascii_alphabetic())
        && !token.chars().skip(1).any(|c| matches!(c, 'a' | 'e' | 'i' | 'o' | 'u'))
}

/// Accumulates tokens, postings and phrases table by table.
#[derive(Default)]
struct Builder {
    tokens: Vec<String>,
    ids: HashMap<String, u32>,
    postings: Vec<Vec<Posting>>,
    phrases: HashMap<(u32, u32), Vec<Phrase>>,
    /// Token ids of texts seen before: names such as `id` or `created_at` repeat a lot.
    memo: HashMap<String, Vec<u32>>,
}

impl Builder {
    fn intern(&mut self, token: String) -> u32 {
        if let Some(id) = self.ids.get(&token) {
            return *id;
        }
        let id = self.tokens.len() as u32;
        self.tokens.push(token.clone());
        self.ids.insert(token, id);
        self.postings.push(Vec::new());
        id
    }

    fn intern_all(&mut self, text: &str) -> Vec<u32> {
        if let Some(ids) = self.memo.get(text) {
            return ids.clone();
        }
        let ids: Vec<u32> = words(text).into_iter().map(|w| self.intern(w)).collect();
        self.memo.insert(text.to_owned(), ids.clone());
        ids
    }

    /// Adds one table; returns its length in tokens and its column tokens.
    fn add_table(
        &mut self,
        table_index: u32,
        table: &Table,
        default_schema: &str,
    ) -> (usize, Vec<ColumnTokens>) {
        let mut counts: Vec<(u32, Field)> = Vec::new();
        let mut length = 0;
        let mut add = |counts: &mut Vec<(u32, Field)>, ids: &[u32], field: Field| {
            counts.extend(ids.iter().map(|id| (*id, field)));
            if field != Field::Sample {
                length += ids.len();
            }
        };
        let name = self.intern_all(&table.name);
        add(&mut counts, &name, Field::TableName);
        if table.schema != default_schema {
            let namespace = self.intern_all(&table.schema);
            add(&mut counts, &namespace, Field::Namespace);
        }
        if let Some(comment) = &table.comment {
            let comment = self.intern_all(comment);
            add(&mut counts, &comment, Field::TableComment);
        }
        let mut columns = Vec::with_capacity(table.columns.len());
        for (c, column) in table.columns.iter().enumerate() {
            let name = self.intern_all(&column.name);
            let field =
                if is_key_like(&column.name) { Field::KeyColumnName } else { Field::ColumnName };
            add(&mut counts, &distinct(&name), field);
            if name.len() >= 2 {
                self.add_phrase(name.clone(), table_index, c as u32, false);
            }
            let comment = match &column.comment {
                Some(text) => distinct(&self.intern_all(text)),
                None => Vec::new(),
            };
            add(&mut counts, &comment, Field::ColumnComment);
            let mut samples = Vec::new();
            for value in &column.sample_values {
                let ids = self.intern_all(value);
                if ids.len() >= 2 {
                    self.add_phrase(ids.clone(), table_index, c as u32, true);
                }
                samples.extend(ids);
            }
            let samples = distinct(&samples);
            add(&mut counts, &samples, Field::Sample);
            columns.push(ColumnTokens {
                name: distinct(&name).into(),
                comment: comment.into(),
                samples: samples.into(),
            });
        }
        counts.sort_unstable();
        let mut i = 0;
        while i < counts.len() {
            let j = i + counts[i..].iter().take_while(|c| **c == counts[i]).count();
            let (token, field) = counts[i];
            let tf = u16::try_from(j - i).unwrap_or(u16::MAX);
            self.postings[token as usize].push(Posting { table: table_index, field, tf });
            i = j;
        }
        (length, columns)
    }

    fn add_phrase(&mut self, tokens: Vec<u32>, table: u32, column: u32, sample: bool) {
        let list = self.phrases.entry((tokens[0], tokens[1])).or_default();
        // Phrases arrive column by column, so a repeat can only be at the tail.
        let duplicate = list
            .iter()
            .rev()
            .take_while(|p| p.table == table && p.column == column)
            .any(|p| p.sample == sample && *p.tokens == tokens[..]);
        if !duplicate {
            list.push(Phrase { tokens: tokens.into(), table, column, sample });
        }
    }
}

/// `ids` without repeats, first occurrence order.
fn distinct(ids: &[u32]) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::with_capacity(ids.len());
    for id in ids {
        if !out.contains(id) {
            out.push(*id);
        }
    }
    out
}

impl TableEntry {
    /// Whether this table joins `a` and `b` through two different columns, as a
    /// junction table does (tables merely sharing one key column do not).
    pub(super) fn joins(&self, a: u32, b: u32) -> bool {
        self.links.iter().any(|(x, via_x)| {
            *x == a && self.links.iter().any(|(y, via_y)| *y == b && via_y != via_x)
        })
    }
}

/// Records that `column` of table `from` references table `to`.
fn link(tables: &mut [TableEntry], from: usize, to: usize, column: u32) {
    if from == to {
        return;
    }
    let target = to as u32;
    if !tables[from].links.contains(&(target, column)) {
        tables[from].links.push((target, column));
    }
    if !tables[from].references.contains(&target) {
        tables[from].references.push(target);
        tables[to].referenced_by.push(from as u32);
    }
}

/// Resolves foreign keys to table indices, both directions.
fn link_foreign_keys(schema: &Schema, tables: &mut [TableEntry]) {
    let by_name: HashMap<(&str, &str), u32> = schema
        .tables
        .iter()
        .enumerate()
        .map(|(i, t)| ((t.schema.as_str(), t.name.as_str()), i as u32))
        .collect();
    for (i, table) in schema.tables.iter().enumerate() {
        for fk in &table.foreign_keys {
            let key = (fk.referenced_schema.as_str(), fk.referenced_table.as_str());
            let Some(&target) = by_name.get(&key) else { continue };
            let column = fk
                .columns
                .first()
                .and_then(|c| table.columns.iter().position(|col| col.name == *c))
                .map_or(u32::MAX, |p| p as u32);
            link(tables, i, target as usize, column);
        }
    }
}

/// The most tables sharing a key-like column name for it to imply joins.
const MAX_SHARED_KEY: usize = 8;

/// Links tables through key-like column names, in namespaces that declare no
/// foreign key at all (common in warehouses and legacy databases): `car_id`
/// references the table `cars` (with an `id`), and tables sharing a column
/// such as `flight_id` or `aid` are joined, to the table named like it when
/// there is one, else to each other.
fn infer_joins(schema: &Schema, tables: &mut [TableEntry]) {
    let declared: HashSet<&str> = schema
        .tables
        .iter()
        .filter(|t| !t.foreign_keys.is_empty())
        .map(|t| t.schema.as_str())
        .collect();
    let mut namespaces: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, t) in schema.tables.iter().enumerate() {
        if !declared.contains(t.schema.as_str()) {
            namespaces.entry(t.schema.as_str()).or_default().push(i);
        }
    }
    for members in namespaces.values() {
        let names = Names::new(schema, members);
        // Table, referenced table and the referencing column's index.
        let mut edges: Vec<(usize, usize, u32)> = Vec::new();
        // `<table>_id` references the table named so, or abbreviated so (`cust_id`).
        for &a in members {
            for (c, column) in schema.tables[a].columns.iter().enumerate() {
                for b in names.target(a, &words(&column.name)) {
                    edges.push((a, b, c as u32));
                }
            }
        }
        // Shared key-like columns, owned by the table whose key or name they carry.
        let mut shared: BTreeMap<String, (Vec<String>, Vec<usize>)> = BTreeMap::new();
        for &t in members {
            for column in &schema.tables[t].columns {
                if is_key_like(&column.name) {
                    let (_, list) = shared
                        .entry(column.name.to_lowercase())
                        .or_insert_with(|| (words(&column.name), Vec::new()));
                    if !list.contains(&t) {
                        list.push(t);
                    }
                }
            }
        }
        for (key, (key_words, holders)) in &shared {
            if holders.len() < 2 || holders.len() > MAX_SHARED_KEY {
                continue;
            }
            let owns_by_key = |t: &usize| {
                let pk = &schema.tables[*t].primary_key;
                pk.len() == 1 && pk[0].eq_ignore_ascii_case(key)
            };
            let owns_by_name = |t: &usize| {
                let name = words(&schema.tables[*t].name);
                !name.is_empty() && key_words.len() > name.len() && key_words.starts_with(&name)
            };
            // `did` for `domain`, `aid` for `author`: a short key abbreviating a one-word name.
            let owns_by_initial = |t: &usize| {
                let name = words(&schema.tables[*t].name);
                let initial = key.strip_suffix("id").filter(|i| !i.is_empty() && key.len() <= 4);
                name.len() == 1 && initial.is_some_and(|i| name[0].starts_with(i))
            };
            let mut owners: Vec<usize> = holders.iter().copied().filter(owns_by_key).collect();
            if owners.is_empty() {
                owners = holders.iter().copied().filter(owns_by_name).collect();
            }
            if owners.is_empty() {
                owners = holders.iter().copied().filter(owns_by_initial).collect();
            }
            for &x in holders {
                for &y in holders {
                    let linked = if owners.len() == 1 { y == owners[0] } else { true };
                    if x != y && linked {
                        let column = schema.tables[x]
                            .columns
                            .iter()
                            .position(|c| c.name.eq_ignore_ascii_case(key))
                            .map_or(u32::MAX, |p| p as u32);
                        edges.push((x, y, column));
                    }
                }
            }
        }
        for (a, b, column) in edges {
            link(tables, a, b, column);
        }
    }
}

/// Most tables a `<name>_id` column may be linked to by an abbreviated name.
const MAX_NAMED_TARGETS: usize = 2;

/// The tables of one namespace that have a key-like first column, by the
/// words of their names, to find what a `<name>_id` column refers to.
struct Names {
    /// Whole name words to tables.
    whole: HashMap<Vec<String>, Vec<usize>>,
    /// Last name word and table, sorted, for abbreviation (prefix) search.
    last: Vec<(String, usize)>,
}

impl Names {
    fn new(schema: &Schema, members: &[usize]) -> Self {
        let mut whole: HashMap<Vec<String>, Vec<usize>> = HashMap::new();
        let mut last = Vec::new();
        for &t in members {
            let table = &schema.tables[t];
            let first = table.primary_key.first().or(table.columns.first().map(|c| &c.name));
            let keyed = first.is_some_and(|c| c.eq_ignore_ascii_case("id") || is_key_like(c));
            let name = words(&table.name);
            if let (true, Some(word)) = (keyed, name.last()) {
                last.push((word.clone(), t));
                whole.entry(name).or_default().push(t);
            }
        }
        last.sort();
        Names { whole, last }
    }

    /// The tables (other than `owner`) a column with `words` such as `[order, id]`
    /// or `[sb, tx, cust, id]` refers to: the table whose whole name ends the
    /// column's words, else the ones whose last name word the column's last
    /// word equals or abbreviates.
    fn target(&self, owner: usize, words: &[String]) -> Vec<usize> {
        let Some((last, head)) = words.split_last() else { return Vec::new() };
        let Some(entity) = head.last() else { return Vec::new() };
        if !matches!(last.as_str(), "id" | "code" | "key") {
            return Vec::new();
        }
        for len in (1..=head.len()).rev() {
            if let Some(tables) = self.whole.get(&head[head.len() - len..]) {
                // The owner's own key (`course.course_id`) refers to nothing else.
                let found: Vec<usize> = tables.iter().copied().filter(|t| *t != owner).collect();
                return if found.len() > MAX_NAMED_TARGETS { Vec::new() } else { found };
            }
        }
        let abbreviation = entity.chars().count() >= 3;
        let start = self.last.partition_point(|(w, _)| w.as_str() < entity.as_str());
        let found: Vec<usize> = self.last[start..]
            .iter()
            .take_while(
                |(w, _)| if abbreviation { w.starts_with(entity.as_str()) } else { w == entity },
            )
            .map(|(_, t)| *t)
            .filter(|t| *t != owner)
            .take(MAX_NAMED_TARGETS + 1)
            .collect();
        if found.len() > MAX_NAMED_TARGETS { Vec::new() } else { found }
    }
}

/// Column names that usually hold a key: `*_id`, `*_code`, `*_key`, or short
/// ones ending in `id` (`aid`, `pid`); a bare `id` says nothing about joins.
fn is_key_like(name: &str) -> bool {
    let lower = name.to_lowercase();
    if lower == "id" {
        return false;
    }
    let w = words(name);
    matches!(w.last().map(String::as_str), Some("id" | "code" | "key"))
        || (lower.len() <= 4 && lower.ends_with("id"))
}

/// Table indices by distinct foreign-key neighbours, most first, then schema order.
fn hubs(tables: &[TableEntry]) -> Vec<u32> {
    let degree = |t: &TableEntry| {
        let mut n = t.references.clone();
        n.extend(t.referenced_by.iter().filter(|x| !t.references.contains(x)));
        n.len()
    };
    let degrees: Vec<usize> = tables.iter().map(degree).collect();
    let mut order: Vec<u32> = (0..tables.len() as u32).collect();
    order.sort_by_key(|i| (std::cmp::Reverse(degrees[*i as usize]), *i));
    order
}
