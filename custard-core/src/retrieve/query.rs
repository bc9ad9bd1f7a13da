//! Question words and what they match in the index: the exact token, and with
//! less strength prefixes, abbreviations and a few synonyms.

use super::index::{self, Index};
use crate::text::words;

/// A distinct word of the question or its context, with how much it counts.
#[derive(Clone, Debug)]
pub(super) struct Term {
    /// The normalized word.
    pub(super) word: String,
    /// 1 for the question, less for earlier questions of the conversation.
    pub(super) weight: f64,
}

/// The words of one text, in order, for phrase matching.
#[derive(Clone, Debug)]
pub(super) struct Sequence {
    /// The normalized words.
    pub(super) words: Vec<String>,
    /// The text's weight, as for [`Term::weight`].
    pub(super) weight: f64,
}

/// Weight of the most recent earlier question; older ones count less.
const CONTEXT_WEIGHT: f64 = 0.25;
/// Each step further back in the conversation multiplies the weight by this.
const CONTEXT_DECAY: f64 = 0.7;
/// The least an earlier question counts.
const CONTEXT_FLOOR: f64 = 0.1;

/// Strength of an exact match.
pub(super) const EXACT: f64 = 1.0;
/// Strength of a synonym or a listed abbreviation.
const SYNONYM: f64 = 0.6;
/// Strength of a prefix match (`cust` and "customer").
const PREFIX: f64 = 0.5;
/// Strength of a vowel-less abbreviation (`qty` and "quantity").
const ABBREVIATION: f64 = 0.4;
/// A question word found inside a longer, glued name.
const INNER_WORD: f64 = 0.5;
/// Strength of a shared stem of five or more letters ("enrolled", `enrollment`).
const SHARED_STEM: f64 = 0.35;
/// The most index tokens one question word may match.
const MAX_EXPANSIONS: usize = 48;

/// The distinct terms of a question and its context, question words first.
pub(super) fn terms(question: &str, context: &[String]) -> (Vec<Term>, Vec<Sequence>) {
    let mut sequences = vec![Sequence { words: words(question), weight: 1.0 }];
    for (age, earlier) in context.iter().rev().enumerate() {
        let weight = (CONTEXT_WEIGHT * CONTEXT_DECAY.powi(age as i32)).max(CONTEXT_FLOOR);
        sequences.push(Sequence { words: words(earlier), weight });
    }
    let mut terms: Vec<Term> = Vec::new();
    for seq in &sequences {
        for (i, word) in seq.words.iter().enumerate() {
            if !is_searchable(word) {
                continue;
            }
            let previous = i.checked_sub(1).map(|p| seq.words[p].as_str());
            let next = seq.words.get(i + 1).map(String::as_str);
            let time = is_time_filter(word, previous, next);
            let weight = seq.weight * if time { TIME_FILTER } else { 1.0 };
            match terms.iter_mut().find(|t| t.word == *word) {
                Some(t) => t.weight = t.weight.max(weight),
                None => terms.push(Term { word: word.clone(), weight }),
            }
        }
    }
    (terms, sequences)
}

/// Weight of a time unit used as a date filter ("in the last 30 days").
const TIME_FILTER: f64 = 0.3;

/// Whether `word` between `previous` and `next` is part of a time span ("30
/// days", "last month", "past 7 days", "per year"), which filters dates rather
/// than naming a table or a column such as `last_name`.
fn is_time_filter(word: &str, previous: Option<&str>, next: Option<&str>) -> bool {
    const UNITS: &[&str] = &["day", "week", "month", "quarter", "year", "hour", "minute"];
    // ("this" and "each" are stop words, gone before this point.)
    const SPANS: &[&str] = &["last", "past", "next", "previous", "per", "every", "current"];
    let number = |w: &str| w.chars().all(|c| c.is_ascii_digit());
    let unit_or_number = |w: &str| UNITS.contains(&w) || number(w);
    (UNITS.contains(&word) && previous.is_some_and(|p| SPANS.contains(&p) || number(p)))
        || (SPANS.contains(&word) && next.is_some_and(unit_or_number))
}

/// Single letters say nothing about a schema; single digits might (`q4`).
fn is_searchable(word: &str) -> bool {
    word.chars().count() >= 2 || word.chars().all(|c| c.is_ascii_digit())
}

/// The index tokens `word` matches, each with a strength in (0, 1].
pub(super) fn expand(index: &Index, word: &str) -> Vec<(u32, f64)> {
    let mut out: Vec<(u32, f64)> = Vec::new();
    let push = |out: &mut Vec<(u32, f64)>, id: u32, strength: f64| match out
        .iter_mut()
        .find(|(t, _)| *t == id)
    {
        Some((_, s)) => *s = s.max(strength),
        None => out.push((id, strength)),
    };
    if let Some(id) = index.id(word) {
        push(&mut out, id, EXACT);
    }
    if word.chars().all(|c| c.is_ascii_digit()) {
        return out;
    }
    for (a, b) in SYNONYMS.iter().chain(ABBREVIATIONS) {
        let other = if *a == word {
            b
        } else if *b == word {
            a
        } else {
            continue;
        };
        if let Some(id) = index.id(other) {
            push(&mut out, id, SYNONYM);
        }
    }
    let chars: Vec<(usize, char)> = word.char_indices().collect();
    let len = chars.len();
    // Index tokens that are a prefix of the word: `cust` for "customer".
    for k in 3..len {
        if let Some(id) = index.id(&word[..chars[k].0]) {
            push(&mut out, id, PREFIX);
        }
    }
    // Index tokens the word is a prefix of, or sharing a long stem with it.
    let mut extended: Vec<(u32, f64)> = Vec::new();
    if len >= 4 {
        let stem_len = len.min(5);
        let stem = &word[..chars.get(stem_len).map_or(word.len(), |c| c.0)];
        for id in index.with_prefix(stem) {
            let token = index.token(id);
            if token == word {
                continue;
            }
            if token.starts_with(word) {
                extended.push((id, PREFIX));
            } else if len >= 5 {
                let shared = common_prefix_chars(token, word);
                let shorter = token.chars().count().min(len);
                if shared >= 5 && shared * 2 >= shorter {
                    extended.push((id, SHARED_STEM));
                }
            }
        }
    }
    // The word glued inside a longer name: "customer" in `sbcustomer`.
    if len >= index::MIN_INNER_WORD {
        for id in index.containing(word) {
            extended.push((id, INNER_WORD));
        }
    }
    // Vowel-less abbreviations of the word: `qty`, `amt`, `nm`.
    if len >= 4 {
        let first = &word[..chars[1].0];
        for id in index.abbreviations_with_prefix(first) {
            let token = index.token(id);
            if token.chars().count() + 2 <= len && is_subsequence(token, word) {
                extended.push((id, ABBREVIATION));
            }
        }
    }
    // Keep the strongest and shortest when a short word matches many tokens.
    extended.sort_by(|a, b| {
        b.1.total_cmp(&a.1)
            .then_with(|| index.token(a.0).len().cmp(&index.token(b.0).len()))
            .then_with(|| index.token(a.0).cmp(index.token(b.0)))
    });
    for (id, strength) in extended {
        if out.len() >= MAX_EXPANSIONS {
            break;
        }
        push(&mut out, id, strength);
    }
    out
}

fn common_prefix_chars(a: &str, b: &str) -> usize {
    a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count()
}

/// Whether the characters of `short` occur in `long` in order.
fn is_subsequence(short: &str, long: &str) -> bool {
    let mut rest = long.chars();
    short.chars().all(|c| rest.by_ref().any(|l| l == c))
}

/// Pairs of words analysts use for the same thing, in normalized (stemmed) form.
const SYNONYMS: &[(&str, &str)] = &[
    ("revenue", "sale"),
    ("revenue", "amount"),
    ("revenue", "income"),
    ("earning", "revenue"),
    ("client", "customer"),
    ("buyer", "customer"),
    ("purchaser", "customer"),
    ("price", "cost"),
    ("employee", "staff"),
    ("employee", "worker"),
    ("product", "item"),
    ("supplier", "vendor"),
    ("purchase", "order"),
    ("purchase", "buy"),
    ("bought", "buy"),
    ("bought", "purchase"),
    ("sold", "sale"),
    ("sold", "sell"),
    ("sell", "sale"),
    ("paid", "pay"),
    ("paid", "payment"),
    ("spent", "spend"),
    ("salary", "wage"),
    ("salary", "pay"),
    ("gender", "sex"),
    ("phone", "telephone"),
    ("born", "birth"),
    ("country", "nation"),
    ("town", "city"),
];

/// Common abbreviations in column and table names, with the word they stand for.
const ABBREVIATIONS: &[(&str, &str)] = &[
    ("qty", "quantity"),
    ("amt", "amount"),
    ("dt", "date"),
    ("num", "number"),
    ("nbr", "number"),
    ("no", "number"),
    ("cust", "customer"),
    ("desc", "description"),
    ("addr", "address"),
    ("cnt", "count"),
    ("pct", "percent"),
    ("pct", "percentage"),
    ("avg", "average"),
    ("tx", "transaction"),
    ("txn", "transaction"),
    ("trx", "transaction"),
    ("emp", "employee"),
    ("dept", "department"),
    ("mgr", "manager"),
    ("prod", "product"),
    ("cat", "category"),
    ("acct", "account"),
    ("bal", "balance"),
    ("tel", "phone"),
    ("ts", "timestamp"),
    ("yr", "year"),
    ("mth", "month"),
    ("wk", "week"),
    ("hr", "hour"),
    ("org", "organization"),
    ("inv", "invoice"),
    ("pmt", "payment"),
    ("dob", "birth"),
    ("ccy", "currency"),
    ("curr", "currency"),
    ("loc", "location"),
    ("ctry", "country"),
    ("lang", "language"),
    ("msg", "message"),
    ("ref", "reference"),
    ("seq", "sequence"),
    ("stat", "status"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::stem;

    #[test]
    fn word_lists_are_normalized() {
        for (a, b) in SYNONYMS.iter().chain(ABBREVIATIONS) {
            for w in [a, b] {
                assert_eq!(words(w), [*w], "{w} is not a normalized word");
                assert_eq!(stem(w), *w);
            }
        }
    }

    #[test]
    fn subsequence() {
        let cases = [("qty", "quantity", true), ("amt", "amount", true), ("nm", "name", true)];
        for (short, long, want) in cases {
            assert_eq!(is_subsequence(short, long), want, "{short} {long}");
        }
        assert!(!is_subsequence("tx", "transaction"));
    }
}
