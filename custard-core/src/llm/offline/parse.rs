//! From tokens to items: sample values, quoted literals, keywords, numbers,
//! time windows and noun phrases matched against the schema. A question may
//! read several ways (is "total" a keyword or the `total` column?), so this
//! yields every reading, best first.

use std::collections::HashSet;

use super::Abstain;
use super::catalog::{Catalog, ColId, TableId, Tier};
use super::lexer::{Dir, Keyword, Token, Unit, keyword_at, quoted_spans, tokenize, unit_of};

/// A noun phrase matched against the schema.
#[derive(Clone, Debug)]
pub(super) struct Noun {
    pub(super) tables: Vec<(TableId, Tier)>,
    pub(super) columns: Vec<(ColId, Tier)>,
    /// The words as written, for messages.
    pub(super) text: String,
    pub(super) plural: bool,
    /// Holds a count or aggregate keyword read as a name ("total" for the
    /// `total` column): fine as a measure after "average", too weak to stand
    /// as a subject or a group.
    pub(super) keyword_like: bool,
}

impl Noun {
    pub(super) fn best_table_tier(&self) -> Tier {
        self.tables.iter().map(|t| t.1).max().unwrap_or(0)
    }

    pub(super) fn best_column_tier(&self) -> Tier {
        self.columns.iter().map(|c| c.1).max().unwrap_or(0)
    }
}

/// What one part of the question says.
#[derive(Clone, Debug)]
pub(super) enum ItemKind {
    Kw(Keyword),
    Top(u64, Dir),
    Window(u64, Unit),
    Year(u64),
    Number(u64),
    Noun(Noun),
    /// A value found among the sample values of these columns (with the exact sample).
    Value(Vec<(ColId, String)>, String),
    /// A quoted text that is no known sample value.
    Literal(String),
}

#[derive(Clone, Debug)]
pub(super) struct Item {
    pub(super) kind: ItemKind,
    /// Index of the first token the item covers.
    pub(super) token: usize,
    /// Index of the token after the item.
    pub(super) end: usize,
    pub(super) sentence: usize,
}

/// The question, tokenized, with its values and quotes found once for all readings.
#[derive(Debug)]
pub(super) struct Question<'q> {
    pub(super) text: &'q str,
    pub(super) tokens: Vec<Token>,
    values: Vec<ValueSpan>,
    /// Quoted texts: (first token, token after the last, text inside the quotes).
    quotes: Vec<(usize, usize, String)>,
}

#[derive(Debug)]
struct ValueSpan {
    start: usize,
    end: usize,
    columns: Vec<(ColId, String)>,
}

/// At most this many readings of one question are tried.
const MAX_READINGS: usize = 256;
/// Noun phrases longer than this many words are not segmented.
const MAX_RUN: usize = 6;

impl<'q> Question<'q> {
    pub(super) fn new(text: &'q str, cat: &Catalog<'_>) -> Self {
        let tokens = tokenize(text);
        let quotes = quoted_spans(text)
            .into_iter()
            .filter_map(|(s, e)| {
                let first = tokens.iter().position(|t| t.start >= s)?;
                let last = tokens.iter().rposition(|t| t.end <= e)?;
                (first <= last).then(|| (first, last + 1, text[s..e].to_owned()))
            })
            .collect();
        let values = find_values(&tokens, cat);
        Question { text, tokens, values, quotes }
    }

    /// Every reading of the question, grouped by rank: the readings of the
    /// first group are preferred to those of the next, and so on.
    pub(super) fn readings(&self, cat: &Catalog<'_>) -> Result<Vec<Vec<Vec<Item>>>, Abstain> {
        let dual = self.dual_tokens(cat);
        if dual.len() > 4 {
            return Err(Abstain::new("could not read the question (too many ambiguous words)"));
        }
        let mut ranked: Vec<((usize, usize, i64), Vec<Item>)> = Vec::new();
        let mut first_error = None;
        for mask in 0..(1u32 << dual.len()) {
            let mut forced = vec![false; self.tokens.len()];
            for (bit, &t) in dual.iter().enumerate() {
                forced[t] = mask & (1 << bit) != 0;
            }
            let raw = self.lex(&forced);
            match self.segment_all(cat, &raw, &forced) {
                Ok(list) => {
                    for (segments, tiers, items) in list {
                        let rank = (mask.count_ones() as usize, segments, -tiers);
                        ranked.push((rank, items));
                        if ranked.len() > MAX_READINGS {
                            return Err(Abstain::new("could not read the question (too long)"));
                        }
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if ranked.is_empty() {
            return Err(first_error.unwrap_or_else(|| Abstain::new("could not read the question")));
        }
        ranked.sort_by_key(|(rank, _)| *rank);
        let mut groups: Vec<Vec<Vec<Item>>> = Vec::new();
        let mut last = None;
        for (rank, items) in ranked {
            if last != Some(rank) {
                groups.push(Vec::new());
                last = Some(rank);
            }
            if let Some(g) = groups.last_mut() {
                g.push(items);
            }
        }
        Ok(groups)
    }

    /// Tokens that start a keyword but are also a word of a table or column
    /// name ("total", "first" in `first_name`): they are read both ways.
    fn dual_tokens(&self, cat: &Catalog<'_>) -> Vec<usize> {
        let none = vec![false; self.tokens.len()];
        (0..self.tokens.len())
            .filter(|&i| {
                let t = &self.tokens[i];
                let is_kw = keyword_at(&self.tokens, i, &none)
                    .is_some_and(|(kw, _)| !matches!(kw, Keyword::Filler));
                is_kw
                    && t.stems.len() == 1
                    && !self.in_value_or_quote(i)
                    && cat.tables.iter().any(|table| {
                        table.words.iter().any(|w| w == &t.stems[0])
                            || table
                                .columns
                                .iter()
                                .any(|c| c.words.iter().any(|w| w == &t.stems[0]))
                    })
            })
            .collect()
    }

    /// Whether `tokens[i]` starts a count or aggregate keyword ("total", "number of").
    fn counts_or_adds(&self, i: usize) -> bool {
        let none = vec![false; self.tokens.len()];
        matches!(keyword_at(&self.tokens, i, &none), Some((Keyword::Count | Keyword::Agg(_), _)))
    }

    fn in_value_or_quote(&self, i: usize) -> bool {
        self.values.iter().any(|v| v.start <= i && i < v.end)
            || self.quotes.iter().any(|&(s, e, _)| s <= i && i < e)
    }

    /// One reading of the tokens; noun words are left as runs to segment.
    fn lex(&self, forced: &[bool]) -> Vec<Raw> {
        let toks = &self.tokens;
        let mut out = Vec::new();
        let mut i = 0;
        while i < toks.len() {
            let t = &toks[i];
            let sentence = t.sentence;
            let push = |out: &mut Vec<Raw>, kind: ItemKind, end: usize| {
                out.push(Raw::Item(Item { kind, token: i, end, sentence }));
            };
            if let Some((s, e, quoted)) = self.quotes.iter().find(|q| q.0 == i) {
                let (s, e) = (*s, *e);
                match self.values.iter().find(|v| v.start == s && v.end == e) {
                    Some(v) => {
                        push(&mut out, ItemKind::Value(v.columns.clone(), self.span(s, e)), e)
                    }
                    None => push(&mut out, ItemKind::Literal(quoted.clone()), e),
                }
                i = e;
                continue;
            }
            if let Some(v) = self.values.iter().find(|v| v.start == i) {
                push(
                    &mut out,
                    ItemKind::Value(v.columns.clone(), self.span(v.start, v.end)),
                    v.end,
                );
                i = v.end;
                continue;
            }
            if !forced[i]
                && let Some((kw, len)) = keyword_at(toks, i, forced)
            {
                let (kind, len) = self.keyword_item(kw, i, len);
                if let Some(kind) = kind {
                    push(&mut out, kind, i + len);
                }
                i += len;
                continue;
            }
            if let Some(n) = t.number {
                let prev = i.checked_sub(1).map(|p| toks[p].lower.as_str());
                let next_sup = keyword_at(toks, i + 1, forced);
                if let Some((Keyword::Superlative { dir, .. }, _)) = next_sup {
                    push(&mut out, ItemKind::Top(n, dir), i + 1);
                } else if matches!(prev, Some("in" | "during")) && (1900..=2100).contains(&n) {
                    push(&mut out, ItemKind::Year(n), i + 1);
                } else {
                    push(&mut out, ItemKind::Number(n), i + 1);
                }
                i += 1;
                continue;
            }
            if t.is_stop() {
                // "number of citations", "cost of round-trip fares": one noun phrase.
                let bridge = self.of_bridge(i, forced);
                match (out.last(), bridge) {
                    (Some(Raw::Run(_)), Some(next)) => i = next,
                    _ => {
                        out.push(Raw::Break);
                        i += 1;
                    }
                }
                continue;
            }
            match out.last_mut() {
                Some(Raw::Run(run))
                    if run.last().is_some_and(|&p| toks[p].sentence == sentence) =>
                {
                    run.push(i)
                }
                _ => out.push(Raw::Run(vec![i])),
            }
            i += 1;
        }
        out
    }

    /// Where the noun after "of" (and "the", "all") starts, if `tokens[i]` is
    /// such an "of" between two nouns of one sentence.
    fn of_bridge(&self, i: usize, forced: &[bool]) -> Option<usize> {
        let toks = &self.tokens;
        if toks[i].lower != "of" {
            return None;
        }
        let mut k = i + 1;
        while toks.get(k).is_some_and(|t| matches!(t.lower.as_str(), "the" | "all" | "a" | "an")) {
            k += 1;
        }
        let t = toks.get(k)?;
        let noun = t.sentence == toks[i].sentence
            && !t.is_stop()
            && t.number.is_none()
            && !self.in_value_or_quote(k)
            && (forced[k] || keyword_at(toks, k, forced).is_none());
        noun.then_some(k)
    }

    /// The item a keyword starts, and how many tokens it takes.
    fn keyword_item(&self, kw: Keyword, i: usize, len: usize) -> (Option<ItemKind>, usize) {
        let toks = &self.tokens;
        let at = |k: usize| toks.get(k).filter(|t| t.sentence == toks[i].sentence);
        match kw {
            Keyword::Filler => (None, len),
            Keyword::Sorted => {
                let none = vec![false; toks.len()];
                let next = keyword_at(toks, i + 1, &none).map(|k| k.0);
                match next {
                    Some(Keyword::Direction(_) | Keyword::Alphabetical) => (None, len),
                    _ => (Some(ItemKind::Kw(Keyword::Unsupported)), len),
                }
            }
            Keyword::Top(dir) => match at(i + 1).and_then(|t| t.number) {
                Some(n) => (Some(ItemKind::Top(n, dir)), 2),
                None => (Some(ItemKind::Kw(Keyword::Unsupported)), 1),
            },
            Keyword::Recent => {
                let number = at(i + 1).and_then(|t| t.number);
                let unit_at = if number.is_some() { i + 2 } else { i + 1 };
                let unit = at(unit_at).and_then(|t| unit_of(&t.lower));
                let after_the = i > 0 && toks[i - 1].lower == "the";
                match (number, unit) {
                    (Some(n), Some(u)) if n > 0 => (Some(ItemKind::Window(n, u)), 3),
                    // "in the past month" is a window; a bare "last month" is a calendar month.
                    (None, Some(u)) if toks[i].lower == "past" || after_the => {
                        (Some(ItemKind::Window(1, u)), 2)
                    }
                    _ => (Some(ItemKind::Kw(Keyword::Unsupported)), 1),
                }
            }
            kw => (Some(ItemKind::Kw(kw)), len),
        }
    }

    /// Every way to read the noun runs of `raw`, as (segments, tier sum, items).
    fn segment_all(
        &self,
        cat: &Catalog<'_>,
        raw: &[Raw],
        forced: &[bool],
    ) -> Result<Vec<(usize, i64, Vec<Item>)>, Abstain> {
        let mut partial: Vec<(usize, i64, Vec<Item>)> = vec![(0, 0, Vec::new())];
        for r in raw {
            match r {
                Raw::Break => {}
                Raw::Item(item) => partial.iter_mut().for_each(|p| p.2.push(item.clone())),
                Raw::Run(run) => {
                    let options = self.segmentations(cat, run, forced)?;
                    let mut next = Vec::new();
                    for (segs, tiers, items) in &partial {
                        for (nouns, tier_sum) in &options {
                            let mut items = items.clone();
                            items.extend(nouns.iter().cloned());
                            next.push((segs + nouns.len(), tiers + tier_sum, items));
                            if next.len() > MAX_READINGS {
                                return Err(Abstain::new("could not read the question (too long)"));
                            }
                        }
                    }
                    partial = next;
                }
            }
        }
        Ok(partial)
    }

    /// The ways to cut a run of noun words into table and column names.
    fn segmentations(
        &self,
        cat: &Catalog<'_>,
        run: &[usize],
        forced: &[bool],
    ) -> Result<Vec<(Vec<Item>, i64)>, Abstain> {
        if run.len() > MAX_RUN {
            return Err(Abstain::new(format!(
                "could not read '{}'",
                self.span(run[0], run[run.len() - 1] + 1)
            )));
        }
        // noun[a][b]: the noun spelt by run[a..b], if any.
        let n = run.len();
        let mut noun: Vec<Vec<Option<Noun>>> = vec![vec![None; n + 1]; n + 1];
        for a in 0..n {
            for b in a + 1..=n {
                noun[a][b] = self.noun(cat, &run[a..b], forced);
            }
        }
        let mut out = Vec::new();
        let mut stack: Vec<(usize, Vec<usize>)> = vec![(0, Vec::new())];
        while let Some((at, cuts)) = stack.pop() {
            if at == n {
                let mut items = Vec::new();
                let mut tiers = 0i64;
                let mut start = 0;
                for &end in &cuts {
                    if let Some(nn) = &noun[start][end] {
                        tiers += i64::from(nn.best_table_tier().max(nn.best_column_tier()));
                        let item = Item {
                            kind: ItemKind::Noun(nn.clone()),
                            token: run[start],
                            end: run[end - 1] + 1,
                            sentence: self.tokens[run[start]].sentence,
                        };
                        items.push(item);
                    }
                    start = end;
                }
                out.push((items, tiers));
                continue;
            }
            for (b, cell) in noun[at].iter().enumerate().skip(at + 1) {
                if cell.is_some() {
                    let mut c = cuts.clone();
                    c.push(b);
                    stack.push((b, c));
                }
            }
        }
        if out.is_empty() {
            let unknown =
                (0..n).find(|&k| (0..=k).all(|a| (k + 1..=n).all(|b| noun[a][b].is_none())));
            let word = match unknown {
                Some(k) => self.span(run[k], run[k] + 1),
                None => self.span(run[0], run[n - 1] + 1),
            };
            return Err(Abstain::new(format!(
                "could not tell which table or column '{word}' means"
            )));
        }
        Ok(out)
    }

    fn noun(&self, cat: &Catalog<'_>, run: &[usize], forced: &[bool]) -> Option<Noun> {
        let seg: Vec<String> = run.iter().flat_map(|&i| self.tokens[i].stems.clone()).collect();
        let mut tables = cat.table_matches(&seg);
        let mut columns = cat.column_matches(&seg);
        // Across "of" ("number of citations") only an exact name holds the words together.
        if run.windows(2).any(|w| w[1] != w[0] + 1) {
            tables.retain(|t| t.1 == 3);
            columns.retain(|c| c.1 == 3);
        }
        if tables.is_empty() && columns.is_empty() {
            return None;
        }
        let last = &self.tokens[run[run.len() - 1]];
        Some(Noun {
            tables,
            columns,
            text: self.span(run[0], run[run.len() - 1] + 1),
            plural: last.is_plural(),
            keyword_like: run.iter().any(|&i| forced[i] && self.counts_or_adds(i)),
        })
    }

    /// The lower-case words between two items, such as "is" in "status is 'shipped'".
    pub(super) fn gap(&self, before: &Item, after: &Item) -> Vec<&str> {
        let (a, b) = (before.end, after.token.max(before.end));
        self.tokens[a..b].iter().map(|t| t.lower.as_str()).collect()
    }

    /// Whether `tokens[i]` is capitalized without starting its sentence, as in a name.
    pub(super) fn capitalized_inside(&self, i: usize) -> bool {
        let t = &self.tokens[i];
        let starts = i == 0 || self.tokens[i - 1].sentence != t.sentence;
        !starts && self.text[t.start..].starts_with(char::is_uppercase)
    }

    /// The question's text from token `a` up to (not including) token `b`.
    pub(super) fn span(&self, a: usize, b: usize) -> String {
        self.text[self.tokens[a].start..self.tokens[b - 1].end].to_owned()
    }
}

/// A step of one reading before noun runs are segmented.
#[derive(Clone, Debug)]
enum Raw {
    Item(Item),
    Run(Vec<usize>),
    Break,
}

/// Where sample values of text columns occur in the question, longest first.
fn find_values(tokens: &[Token], cat: &Catalog<'_>) -> Vec<ValueSpan> {
    let none = vec![false; tokens.len()];
    let mut found: Vec<ValueSpan> = Vec::new();
    // A cheap test on the first word before tokenizing a sample: schemas hold many.
    let lowers: HashSet<&str> = tokens.iter().map(|t| t.lower.as_str()).collect();
    let stems: HashSet<&[String]> = tokens.iter().map(|t| t.stems.as_slice()).collect();
    let may_occur = |sample: &str| {
        let first = sample.split(|c: char| !c.is_alphanumeric()).find(|w| !w.is_empty());
        first.is_some_and(|w| {
            let lower = w.to_lowercase();
            lowers.contains(lower.as_str())
                || stems.contains(tokenize(w).first().map_or(&[][..], |t| &t.stems[..]))
        })
    };
    for (ti, table) in cat.schema.tables.iter().enumerate() {
        for (ci, column) in table.columns.iter().enumerate() {
            for sample in column.sample_values.iter().filter(|s| may_occur(s)) {
                let words = tokenize(sample);
                let meaningful = words.iter().any(|w| w.lower.chars().any(char::is_alphabetic))
                    && sample.chars().count() >= 2
                    && (0..words.len())
                        .any(|k| !words[k].is_stop() && keyword_at(&words, k, &none).is_none());
                let seg: Vec<String> = words.iter().flat_map(|w| w.stems.clone()).collect();
                let names_table = cat.table_matches(&seg).iter().any(|m| m.1 == 3);
                if !meaningful || names_table {
                    continue;
                }
                for start in 0..tokens.len() {
                    let Some(end) = value_at(tokens, start, &words) else { continue };
                    let exact = ((ti, ci), sample.clone());
                    match found.iter_mut().find(|v| v.start == start && v.end == end) {
                        Some(v) if !v.columns.iter().any(|c| c.0 == (ti, ci)) => {
                            v.columns.push(exact)
                        }
                        Some(_) => {}
                        None => found.push(ValueSpan { start, end, columns: vec![exact] }),
                    }
                }
            }
        }
    }
    // Longest spans win where they overlap.
    found.sort_by_key(|v| (std::cmp::Reverse(v.end - v.start), v.start));
    let mut kept: Vec<ValueSpan> = Vec::new();
    for v in found {
        if kept.iter().all(|k| v.end <= k.start || k.end <= v.start) {
            kept.push(v);
        }
    }
    kept.sort_by_key(|v| v.start);
    kept
}

/// Where the value made of `words` ends if it starts at `tokens[start]`.
fn value_at(tokens: &[Token], start: usize, words: &[Token]) -> Option<usize> {
    let end = start + words.len();
    if words.is_empty() || end > tokens.len() {
        return None;
    }
    let same_sentence = tokens[start..end].iter().all(|t| t.sentence == tokens[start].sentence);
    let exact = tokens[start..end].iter().zip(words).all(|(t, w)| t.lower == w.lower);
    // One long word may differ by a plural: "stocks" for 'stock'.
    let stem = words.len() == 1
        && words[0].lower.chars().count() >= 4
        && !words[0].stems.is_empty()
        && tokens[start].stems == words[0].stems;
    (same_sentence && (exact || stem)).then_some(end)
}
