//! SQL syntax highlighting for the web UI, done on the server.
//!
//! The `sqlparser` tokenizer (PostgreSQL dialect) finds keywords, strings, numbers and
//! comments; the HTML is cut from the original text by token location, never
//! re-printed from tokens, so its text content is exactly the input.

use std::fmt::Write as _;

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer, Whitespace};

use super::Escaped;

/// The SQL as escaped HTML with keywords, strings, numbers and comments in classed `<span>`s.
pub(crate) fn sql_html(sql: &str) -> String {
    let dialect = PostgreSqlDialect {};
    match Tokenizer::new(&dialect, sql).tokenize_with_location() {
        Ok(tokens) => highlighted(sql, &tokens),
        Err(_) => escape(sql),
    }
}

/// Wraps the classed tokens' text in spans and escapes everything.
fn highlighted(sql: &str, tokens: &[TokenWithSpan]) -> String {
    let offsets = Offsets::new(sql);
    let mut marked: Vec<(usize, usize, &str)> = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let Some(class) = class_of(tokens, i) else { continue };
        let (Some(start), Some(mut end)) = (offsets.byte(t.span.start), offsets.byte(t.span.end))
        else {
            continue;
        };
        if matches!(t.token, Token::Whitespace(Whitespace::SingleLineComment { .. })) {
            // The tokenizer counts the line break into the comment; leave it outside the span.
            end = start + sql[start..end].trim_end_matches(['\r', '\n']).len();
        }
        if start < end {
            marked.push((start, end, class));
        }
    }
    // A `COPY ... FROM STDIN` payload is listed before the `;` that precedes it.
    marked.sort_unstable_by_key(|&(start, _, _)| start);

    let mut out = String::with_capacity(sql.len() + sql.len() / 2);
    let mut done = 0;
    for (start, end, class) in marked {
        if start < done {
            continue;
        }
        push_escaped(&mut out, &sql[done..start]);
        out.push_str("<span class=\"");
        out.push_str(class);
        out.push_str("\">");
        push_escaped(&mut out, &sql[start..end]);
        out.push_str("</span>");
        done = end;
    }
    push_escaped(&mut out, &sql[done..]);
    out
}

/// The CSS class of the token at `i`, or `None` for plain text.
fn class_of(tokens: &[TokenWithSpan], i: usize) -> Option<&'static str> {
    match &tokens[i].token {
        Token::Word(w) if w.quote_style.is_none() && w.keyword != Keyword::NoKeyword => {
            // `o.status`: a part of a qualified name is an identifier even when it is a keyword.
            let qualified = matches!(neighbour(tokens, i, -1), Some(Token::Period))
                || matches!(neighbour(tokens, i, 1), Some(Token::Period));
            (!qualified).then_some("kw")
        }
        Token::Number(..) => Some("num"),
        Token::Whitespace(
            Whitespace::SingleLineComment { .. } | Whitespace::MultiLineComment(_),
        ) => Some("com"),
        Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::TripleSingleQuotedString(_)
        | Token::TripleDoubleQuotedString(_)
        | Token::DollarQuotedString(_)
        | Token::SingleQuotedByteStringLiteral(_)
        | Token::DoubleQuotedByteStringLiteral(_)
        | Token::TripleSingleQuotedByteStringLiteral(_)
        | Token::TripleDoubleQuotedByteStringLiteral(_)
        | Token::SingleQuotedRawStringLiteral(_)
        | Token::DoubleQuotedRawStringLiteral(_)
        | Token::TripleSingleQuotedRawStringLiteral(_)
        | Token::TripleDoubleQuotedRawStringLiteral(_)
        | Token::NationalStringLiteral(_)
        | Token::QuoteDelimitedStringLiteral(_)
        | Token::NationalQuoteDelimitedStringLiteral(_)
        | Token::EscapedStringLiteral(_)
        | Token::UnicodeStringLiteral(_)
        | Token::HexStringLiteral(_) => Some("str"),
        _ => None,
    }
}

/// The nearest token before (`step` -1) or after (`step` 1) `i` that is not whitespace.
fn neighbour(tokens: &[TokenWithSpan], i: usize, step: isize) -> Option<&Token> {
    let mut j = i;
    loop {
        j = j.checked_add_signed(step)?;
        match &tokens.get(j)?.token {
            Token::Whitespace(_) => {}
            token => return Some(token),
        }
    }
}

/// Byte offsets of the tokenizer's locations: lines split at `\n`, columns count chars, both from 1.
struct Offsets {
    /// The byte offset of every char, then the length of the text.
    chars: Vec<usize>,
    /// The index into `chars` of every line's first char.
    lines: Vec<usize>,
}

impl Offsets {
    fn new(text: &str) -> Self {
        let mut chars = Vec::with_capacity(text.len() + 1);
        let mut lines = vec![0];
        for (i, (byte, c)) in text.char_indices().enumerate() {
            chars.push(byte);
            if c == '\n' {
                lines.push(i + 1);
            }
        }
        chars.push(text.len());
        Offsets { chars, lines }
    }

    /// The byte offset of a location, `None` for an empty or out-of-range one.
    fn byte(&self, at: Location) -> Option<usize> {
        let line = usize::try_from(at.line).ok()?.checked_sub(1)?;
        let column = usize::try_from(at.column).ok()?.checked_sub(1)?;
        let first = *self.lines.get(line)?;
        // The last position of a line is the start of the next, or the end of the text.
        let last = self.lines.get(line + 1).copied().unwrap_or(self.chars.len() - 1);
        (first + column <= last).then(|| self.chars[first + column])
    }
}

fn escape(text: &str) -> String {
    Escaped(text).to_string()
}

fn push_escaped(out: &mut String, text: &str) {
    // Writing to a String cannot fail.
    let _ = write!(out, "{}", Escaped(text));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text a browser shows for the HTML: tags dropped, entities decoded.
    fn text_of(html: &str) -> String {
        let mut text = String::new();
        let mut in_tag = false;
        for c in html.chars() {
            match c {
                '<' => in_tag = true,
                '>' if in_tag => in_tag = false,
                c if !in_tag => text.push(c),
                _ => {}
            }
        }
        text.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&amp;", "&")
    }

    fn check(sql: &str, expected: &str) {
        assert_eq!(sql_html(sql), expected, "highlighting {sql:?}");
    }

    #[test]
    fn classes() {
        check(
            "SELECT id FROM t",
            r#"<span class="kw">SELECT</span> <span class="kw">id</span> <span class="kw">FROM</span> t"#,
        );
        check("select 1.5e3", r#"<span class="kw">select</span> <span class="num">1.5e3</span>"#);
        check(
            "SELECT 'it''s'",
            r#"<span class="kw">SELECT</span> <span class="str">&#39;it&#39;&#39;s&#39;</span>"#,
        );
        check(
            "SELECT $$a 'b'$$",
            r#"<span class="kw">SELECT</span> <span class="str">$$a &#39;b&#39;$$</span>"#,
        );
        check(
            "SELECT E'\\n'",
            r#"<span class="kw">SELECT</span> <span class="str">E&#39;\n&#39;</span>"#,
        );
        // The line break after a `--` comment stays outside its span.
        check(
            "-- top\nSELECT 1 /* a\nb */",
            "<span class=\"com\">-- top</span>\n<span class=\"kw\">SELECT</span> \
             <span class=\"num\">1</span> <span class=\"com\">/* a\nb */</span>",
        );
        // Quoted identifiers are never keywords, nor are parts of qualified names.
        check(r#"SELECT "select""#, r#"<span class="kw">SELECT</span> &quot;select&quot;"#);
        check(
            "SELECT o.status FROM orders AS o",
            "<span class=\"kw\">SELECT</span> o.status <span class=\"kw\">FROM</span> orders \
             <span class=\"kw\">AS</span> o",
        );
        check("", "");
    }

    #[test]
    fn text_content_is_the_input() {
        let queries = [
            "SELECT 1",
            "select \"Order Total\", 'it''s' AS x\nFROM t -- trailing comment\nWHERE a < 3 AND b <> 'x&y'",
            "/* hi\n   there */ SELECT\n\t*\nFROM \"weird \"\"name\"\"\" LIMIT 10;",
            "SELECT 'héllo wörld 🎉', \"naïve\" FROM données WHERE x = 'ü' -- fin ✓",
            "SELECT 1\r\nFROM t\r\n-- windows\r\nWHERE x >= 2\r\n",
            "SELECT $tag$ it's <b> $tag$, E'\\'', U&'\\0041', X'ff', 12::int, -3.5",
            "SELECT count(*) FILTER (WHERE ok) OVER (PARTITION BY d) FROM s.t\n\n   ",
            "COPY t FROM STDIN;\n1\tfoo\n\\.\nSELECT 2",
        ];
        for sql in queries {
            assert_eq!(text_of(&sql_html(sql)), sql, "round trip of {sql:?}");
        }
    }

    #[test]
    fn markup_in_sql_is_escaped() {
        let html = sql_html("SELECT '<script>' || a & b FROM t WHERE x < 1 AND y > 2");
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(html.contains(" &amp; b"), "{html}");
        assert!(html.contains("x &lt; <span") && html.contains("y &gt; <span"), "{html}");
    }

    #[test]
    fn tokenizer_errors_fall_back_to_escaped_text() {
        check("SELECT 'abc", "SELECT &#39;abc");
        check("SELECT \"a<b", "SELECT &quot;a&lt;b");
        check("SELECT 1 /* open", "SELECT 1 /* open");
    }
}
