//! Splitting a question into tokens, and the fixed vocabulary of the engine.

use super::catalog::canon;
use crate::text::words;

/// One word or number of the question.
#[derive(Clone, Debug)]
pub(super) struct Token {
    /// Byte range in the question.
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) lower: String,
    /// Normalized words: empty for a stop word, several for `sbCustName`.
    pub(super) stems: Vec<String>,
    pub(super) number: Option<u64>,
    /// Which sentence of the question the token is in, from 0.
    pub(super) sentence: usize,
}

impl Token {
    pub(super) fn is_stop(&self) -> bool {
        self.stems.is_empty()
    }

    /// Whether the word is a plural noun ("orders", not "status").
    pub(super) fn is_plural(&self) -> bool {
        self.stems.len() == 1 && self.lower != self.stems[0] && self.lower.ends_with('s')
    }
}

/// Splits `text` into tokens: runs of letters and digits, possessive `'s` dropped.
pub(super) fn tokenize(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut sentence = 0;
    let mut last_end = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if !c.is_alphanumeric() {
            continue;
        }
        let mut end = start + c.len_utf8();
        while let Some(&(i, d)) = chars.peek() {
            if !d.is_alphanumeric() {
                break;
            }
            end = i + d.len_utf8();
            chars.next();
        }
        let gap = &text[last_end..start];
        let raw = &text[start..end];
        if !tokens.is_empty() && ends_sentence(gap, &text[start..]) {
            sentence += 1;
        }
        last_end = end;
        let possessive = raw.eq_ignore_ascii_case("s") && (gap == "'" || gap == "\u{2019}");
        if possessive && !tokens.is_empty() {
            continue;
        }
        let lower = raw.to_lowercase();
        let number = number_value(&lower);
        let stems = words(raw).iter().map(|w| canon(w)).collect();
        tokens.push(Token { start, end, lower, stems, number, sentence });
    }
    tokens
}

/// Whether the text between two words ends a sentence ("?", "!", ";" or a
/// full stop that is not a decimal point).
fn ends_sentence(gap: &str, next: &str) -> bool {
    let decimal = gap == "." && next.starts_with(|c: char| c.is_ascii_digit());
    !decimal && gap.contains(['?', '!', ';', '.'])
}

fn number_value(lower: &str) -> Option<u64> {
    if lower.chars().all(|c| c.is_ascii_digit()) {
        return lower.parse().ok().filter(|_| lower.len() <= 9);
    }
    let words = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"];
    words.iter().position(|w| *w == lower).map(|i| i as u64 + 2)
}

/// Quoted parts of the question: byte ranges of the text inside the quotes.
pub(super) fn quoted_spans(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        let close = match c {
            '\'' | '"' | '`' => c,
            '\u{201c}' => '\u{201d}',
            '\u{2018}' => '\u{2019}',
            _ => {
                i += 1;
                continue;
            }
        };
        let opens = i == 0 || !chars[i - 1].1.is_alphanumeric();
        let end = (i + 1..chars.len()).find(|&j| {
            chars[j].1 == close && chars.get(j + 1).is_none_or(|(_, n)| !n.is_alphanumeric())
        });
        match end {
            Some(j) if opens && j > i + 1 => {
                out.push((at + c.len_utf8(), chars[j].0));
                i = j + 1;
            }
            _ => i += 1,
        }
    }
    out
}

/// The direction of an ordering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dir {
    Asc,
    Desc,
}

/// An aggregate function over a measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AggFn {
    Sum,
    Avg,
    Max,
    Min,
}

/// A unit of a time window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Unit {
    Day,
    Week,
    Month,
    Year,
}

/// What a fixed phrase of the vocabulary means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Keyword {
    /// "how many", "number of", "count".
    Count,
    /// "distinct", "different", "unique".
    Distinct,
    /// "total", "average", "maximum"...
    Agg(AggFn),
    /// "highest", "lowest"; `most` for "most"/"fewest", which can count rows.
    Superlative { dir: Dir, most: bool },
    /// "top" or "bottom", before a number.
    Top(Dir),
    /// "by", "per", "grouped by".
    By,
    /// "each", "for each", "every".
    Each,
    /// "ordered by", "sorted by".
    OrderBy,
    /// "ordered", "sorted" alone: only before a direction ("sorted in descending order").
    Sorted,
    /// "descending", "from highest to lowest".
    Direction(Dir),
    /// "alphabetically".
    Alphabetical,
    /// "list", "display", "find": asks for rows.
    List,
    /// "named", "called": a literal name follows.
    Named,
    /// "last", "past": a time window may follow.
    Recent,
    /// Words that carry no meaning for the query ("records", "database").
    Filler,
    /// Words that ask for something the engine does not do.
    Unsupported,
}

/// Fixed phrases, tried in order: a longer phrase comes before any phrase
/// that starts it (a unit test checks).
const PHRASES: &[(&[&str], Keyword)] = {
    use AggFn::*;
    use Dir::*;
    use Keyword::*;
    &[
        (&["how", "many"], Count),
        (&["count", "the", "number", "of"], Count),
        (&["total", "number", "of"], Count),
        (&["number", "of"], Count),
        (&["count", "of"], Count),
        (&["count"], Count),
        (&["distinct"], Distinct),
        (&["different"], Distinct),
        (&["unique"], Distinct),
        (&["sum", "of"], Agg(Sum)),
        (&["sum"], Agg(Sum)),
        (&["total"], Agg(Sum)),
        (&["average"], Agg(Avg)),
        (&["avg"], Agg(Avg)),
        (&["mean"], Agg(Avg)),
        (&["maximum"], Agg(Max)),
        (&["max"], Agg(Max)),
        (&["minimum"], Agg(Min)),
        (&["min"], Agg(Min)),
        (&["at", "least"], Unsupported),
        (&["at", "most"], Unsupported),
        (&["from", "highest", "to", "lowest"], Direction(Desc)),
        (&["highest", "to", "lowest"], Direction(Desc)),
        (&["from", "largest", "to", "smallest"], Direction(Desc)),
        (&["largest", "to", "smallest"], Direction(Desc)),
        (&["from", "most", "to", "least"], Direction(Desc)),
        (&["most", "to", "least"], Direction(Desc)),
        (&["from", "lowest", "to", "highest"], Direction(Asc)),
        (&["lowest", "to", "highest"], Direction(Asc)),
        (&["from", "smallest", "to", "largest"], Direction(Asc)),
        (&["smallest", "to", "largest"], Direction(Asc)),
        (&["from", "least", "to", "most"], Direction(Asc)),
        (&["least", "to", "most"], Direction(Asc)),
        (&["in", "descending", "order"], Direction(Desc)),
        (&["descending", "order"], Direction(Desc)),
        (&["descending"], Direction(Desc)),
        (&["desc"], Direction(Desc)),
        (&["in", "ascending", "order"], Direction(Asc)),
        (&["ascending", "order"], Direction(Asc)),
        (&["ascending"], Direction(Asc)),
        (&["asc"], Direction(Asc)),
        (&["in", "alphabetical", "order"], Alphabetical),
        (&["alphabetical", "order"], Alphabetical),
        (&["alphabetically"], Alphabetical),
        (&["highest"], Superlative { dir: Desc, most: false }),
        (&["largest"], Superlative { dir: Desc, most: false }),
        (&["biggest"], Superlative { dir: Desc, most: false }),
        (&["greatest"], Superlative { dir: Desc, most: false }),
        (&["most"], Superlative { dir: Desc, most: true }),
        (&["lowest"], Superlative { dir: Asc, most: false }),
        (&["smallest"], Superlative { dir: Asc, most: false }),
        (&["least"], Superlative { dir: Asc, most: true }),
        (&["fewest"], Superlative { dir: Asc, most: true }),
        (&["top"], Top(Desc)),
        (&["bottom"], Top(Asc)),
        (&["grouped", "by"], By),
        (&["group", "by"], By),
        (&["broken", "down", "by"], By),
        (&["split", "by"], By),
        (&["per"], By),
        (&["by"], By),
        (&["for", "each"], Each),
        (&["in", "each"], Each),
        (&["of", "each"], Each),
        (&["for", "every"], Each),
        (&["each"], Each),
        (&["every"], Each),
        (&["ordered", "by"], OrderBy),
        (&["sorted", "by"], OrderBy),
        (&["order", "by"], OrderBy),
        (&["sort", "by"], OrderBy),
        (&["ordered", "alphabetically"], Alphabetical),
        (&["sorted", "alphabetically"], Alphabetical),
        (&["ordered"], Sorted),
        (&["sorted"], Sorted),
        (&["list"], List),
        (&["display"], List),
        (&["find"], List),
        (&["fetch"], List),
        (&["retrieve"], List),
        (&["return"], List),
        (&["named"], Named),
        (&["called"], Named),
        (&["last"], Recent),
        (&["past"], Recent),
        (&["in", "total"], Filler),
        (&["in", "the", "database"], Filler),
        (&["altogether"], Filler),
        (&["overall"], Filler),
        (&["records"], Filler),
        (&["record"], Filler),
        (&["rows"], Filler),
        (&["entries"], Filler),
        (&["database"], Filler),
        (&["exist"], Filler),
        (&["currently"], Filler),
        (&["available"], Filler),
        (&["placed"], Filler),
        (&["made"], Filler),
        (&["want"], Filler),
        (&["need"], Filler),
        (&["know"], Filler),
        (&["see"], Filler),
        (&["also"], Filler),
        (&["not"], Unsupported),
        (&["no"], Unsupported),
        (&["none"], Unsupported),
        (&["never"], Unsupported),
        (&["without"], Unsupported),
        (&["except"], Unsupported),
        (&["excluding"], Unsupported),
        (&["exclude"], Unsupported),
        (&["neither"], Unsupported),
        (&["nor"], Unsupported),
        (&["than"], Unsupported),
        (&["versus"], Unsupported),
        (&["vs"], Unsupported),
        (&["both"], Unsupported),
        (&["either"], Unsupported),
        (&["between"], Unsupported),
        (&["same"], Unsupported),
        (&["another"], Unsupported),
        (&["other"], Unsupported),
        (&["when"], Unsupported),
        (&["why"], Unsupported),
        (&["first"], Unsupported),
        (&["previous"], Unsupported),
        (&["next"], Unsupported),
    ]
};

/// The keyword phrase starting at `tokens[i]`, as (keyword, token count);
/// tokens marked in `as_noun` are never part of one.
pub(super) fn keyword_at(tokens: &[Token], i: usize, as_noun: &[bool]) -> Option<(Keyword, usize)> {
    PHRASES.iter().find_map(|(words, kw)| {
        let fits = tokens.len() >= i + words.len()
            && words.iter().enumerate().all(|(k, w)| {
                let t = &tokens[i + k];
                t.lower == *w
                    && (k == 0 || t.sentence == tokens[i].sentence)
                    && !as_noun.get(i + k).is_some_and(|f| *f)
            });
        fits.then_some((*kw, words.len()))
    })
}

/// The fixed phrases, in the order they are tried.
#[cfg(test)]
pub(super) fn phrases() -> &'static [(&'static [&'static str], Keyword)] {
    PHRASES
}

/// The time unit a word names ("days", "month").
pub(super) fn unit_of(lower: &str) -> Option<Unit> {
    Some(match lower {
        "day" | "days" => Unit::Day,
        "week" | "weeks" => Unit::Week,
        "month" | "months" => Unit::Month,
        "year" | "years" => Unit::Year,
        _ => return None,
    })
}
