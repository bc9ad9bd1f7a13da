//! Word normalization shared by retrieval and the offline engine: identifiers
//! and questions become the same kind of lowercase, singular word stems; and
//! cutting text that comes from elsewhere to a bounded length.

/// Splits text or an identifier into normalized words: `customerOrders`,
/// `customer_orders` and "customer orders" all give `["customer", "order"]`.
/// Stop words are dropped; numbers are kept as words.
///
/// ```
/// assert_eq!(custard_core::words("Top 5 customerOrders by total_amount"),
///            ["top", "5", "customer", "order", "total", "amount"]);
/// ```
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for raw in split_identifier_parts(text) {
        let lower = raw.to_lowercase();
        if STOP_WORDS.binary_search(&lower.as_str()).is_ok() {
            continue;
        }
        out.push(stem(&lower));
    }
    out
}

/// Splits on anything not alphanumeric, on lower-to-upper case changes and on
/// letter/digit boundaries.
fn split_identifier_parts(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    for chunk in text.split(|c: char| !c.is_alphanumeric()) {
        if chunk.is_empty() {
            continue;
        }
        let mut start = 0;
        let chars: Vec<(usize, char)> = chunk.char_indices().collect();
        for w in chars.windows(2) {
            let ((_, a), (i, b)) = (w[0], w[1]);
            let boundary = (a.is_lowercase() && b.is_uppercase())
                || (a.is_alphabetic() && b.is_ascii_digit())
                || (a.is_ascii_digit() && b.is_alphabetic());
            if boundary {
                parts.push(&chunk[start..i]);
                start = i;
            }
        }
        parts.push(&chunk[start..]);
    }
    parts
}

/// A light English stemmer: plural and a few common suffixes, enough to match
/// "orders" with `order` and "categories" with `category`.
pub fn stem(word: &str) -> String {
    let w = word;
    if w.len() <= 3 || w.chars().any(|c| c.is_ascii_digit()) {
        return w.to_owned();
    }
    if let Some(s) = w.strip_suffix("ies") {
        return format!("{s}y");
    }
    for suffix in ["sses", "shes", "ches", "xes"] {
        if w.ends_with(suffix) {
            return w[..w.len() - 2].to_owned();
        }
    }
    if w.ends_with("ss") || w.ends_with("us") || w.ends_with("is") {
        return w.to_owned();
    }
    if let Some(s) = w.strip_suffix('s') {
        return s.to_owned();
    }
    w.to_owned()
}

/// Words too common to say anything about tables or columns (sorted).
const STOP_WORDS: &[&str] = &[
    "a", "about", "all", "an", "and", "any", "are", "as", "at", "be", "been", "by", "can", "could",
    "did", "do", "does", "each", "for", "from", "get", "give", "had", "has", "have", "how", "i",
    "in", "into", "is", "it", "its", "me", "my", "of", "on", "or", "our", "please", "show", "tell",
    "that", "the", "their", "them", "there", "these", "they", "this", "those", "to", "us", "was",
    "we", "were", "what", "when", "where", "which", "who", "whose", "why", "will", "with", "would",
    "you", "your",
];

/// A cheap estimate of how many model tokens `text` takes (about four
/// characters a token for English and SQL), used for prompt budgets.
pub fn estimate_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

/// At most `max` characters of `text`, with `...` when cut: for text from a
/// peer or a model that is echoed in an error or a prompt.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_cuts_at_characters() {
        assert_eq!(truncate("héllo", 2), "hé...");
        assert_eq!(truncate("hi", 2), "hi");
    }

    #[test]
    fn stop_words_are_sorted() {
        assert!(STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn words_cases() {
        let cases: &[(&str, &[&str])] = &[
            ("customer_orders", &["customer", "order"]),
            ("CustomerOrders", &["customer", "order"]),
            ("How many orders were placed?", &["many", "order", "placed"]),
            ("categories boxes classes status", &["category", "box", "class", "status"]),
            ("sbCustId", &["sb", "cust", "id"]),
            ("address2 q4", &["address", "2", "q", "4"]),
            ("", &[]),
        ];
        for (text, want) in cases {
            assert_eq!(words(text), *want, "{text}");
        }
    }
}
