//! Finding the SQL in a model's reply.
//!
//! Models wrap SQL in Markdown fences, put prose around it, think aloud in
//! `<think>` blocks first, or answer with bare SQL followed by an explanation.
//! This module recovers the one query the reply is about, as text; whether
//! that text is acceptable is the guard's call, never this module's.

/// Words that open a read-only query, which is what a reply should contain.
const QUERY_STARTS: &[&str] = &["select", "with", "values", "table"];

/// Words that open any other statement: still extracted from a bare reply, so
/// the guard can reject it with a reason the model can act on.
const OTHER_STATEMENT_STARTS: &[&str] = &[
    "insert", "update", "delete", "merge", "drop", "create", "alter", "truncate", "grant",
    "revoke", "copy", "call", "do", "explain", "show", "pragma", "attach", "vacuum", "set",
];

/// Fence info strings that announce SQL.
const SQL_TAGS: &[&str] = &["sql", "postgresql", "postgres", "psql", "pgsql", "sqlite", "sqlite3"];

/// The SQL statement in a model reply, without a trailing semicolon.
///
/// Looks, in order, at fenced code blocks (```` ``` ```` or `~~~`, with or without a
/// language tag), then at bare SQL lines in the reply, then at inline
/// `` `code` ``. `<think>` blocks are ignored. A reply that holds only comments
/// (`-- cannot answer: ...`) or only prose gives `None`.
///
/// ```
/// use custard_core::llm::extract_sql;
///
/// let reply = "Here you go:\n```sql\nSELECT count(*) FROM orders;\n```\nIt counts orders.";
/// assert_eq!(extract_sql(reply).as_deref(), Some("SELECT count(*) FROM orders"));
/// assert_eq!(extract_sql("-- cannot answer: no such table"), None);
/// ```
pub fn extract_sql(text: &str) -> Option<String> {
    let text = strip_reasoning(text);
    let mut blocks = fenced_blocks(&text);
    blocks.extend(tagged_blocks(&text));
    blocks.extend(json_blocks(&text, &blocks));
    // The first block that reads as a query; failing that, the first SQL-tagged
    // block with any statement in it, so the guard can say what is wrong.
    if let Some(block) = blocks.iter().find(|b| starts_like_query(&b.body)) {
        return finish(&block.body);
    }
    if let Some(block) = blocks.iter().find(|b| b.tagged_sql && has_statement(&b.body)) {
        return finish(&block.body);
    }
    let outside = text_outside_fences(&text);
    if let Some(sql) = bare_sql(&outside) {
        return finish(&sql);
    }
    inline_code(&outside).and_then(|sql| finish(&sql))
}

/// Removes `<think>...</think>` reasoning: closed blocks, a block left open
/// (the rest is reasoning), and a lone `</think>` whose opening tag was part
/// of the prompt template.
fn strip_reasoning(text: &str) -> String {
    const OPEN: &str = "<think>";
    const CLOSE: &str = "</think>";
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    if let (Some(close), open) = (lower.find(CLOSE), lower.find(OPEN))
        && open.is_none_or(|o| o > close)
    {
        pos = close + CLOSE.len();
    }
    while let Some(rel) = lower[pos..].find(OPEN) {
        let start = pos + rel;
        out.push_str(&text[pos..start]);
        match lower[start..].find(CLOSE) {
            Some(rel_close) => pos = start + rel_close + CLOSE.len(),
            None => return out,
        }
    }
    out.push_str(&text[pos..]);
    out
}

/// One fenced code block.
#[derive(Debug)]
struct Block {
    body: String,
    tagged_sql: bool,
}

/// An opening or closing fence line: its character, length and info string.
fn fence(line: &str) -> Option<(char, usize, &str)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let ch = rest.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = rest.len() - rest.trim_start_matches(ch).len();
    (len >= 3).then(|| (ch, len, rest[len..].trim()))
}

/// Every fenced block, in order; an unclosed fence runs to the end of the text.
fn fenced_blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some((ch, len, info)) = fence(line) else { continue };
        // A fence that closes on its own line: ```SELECT 1```.
        if ch == '`'
            && let Some(inner) = info.strip_suffix(&"`".repeat(len))
        {
            blocks.push(Block { body: inner.trim().to_owned(), tagged_sql: false });
            continue;
        }
        let tag = info.split_whitespace().next().unwrap_or("").to_ascii_lowercase();
        let tagged_sql = SQL_TAGS.contains(&tag.as_str());
        // Some models put the query on the fence line: ```sql SELECT 1
        let mut body = String::new();
        if !tag.is_empty() && !tagged_sql && is_statement_word(&tag) {
            body.push_str(info);
            body.push('\n');
        } else if tagged_sql {
            let after_tag = info[tag.len()..].trim();
            if starts_like_query(after_tag) {
                body.push_str(after_tag);
                body.push('\n');
            }
        }
        for inner in lines.by_ref() {
            if let Some((c, l, rest)) = fence(inner)
                && c == ch
                && l >= len
                && rest.is_empty()
            {
                break;
            }
            body.push_str(inner);
            body.push('\n');
        }
        blocks.push(Block { body, tagged_sql: tagged_sql || tag.is_empty() });
    }
    blocks
}

/// `<sql>...</sql>` blocks, which some prompts ask for.
fn tagged_blocks(text: &str) -> Vec<Block> {
    let lower = text.to_ascii_lowercase();
    let mut blocks = Vec::new();
    let mut pos = 0;
    while let Some(rel) = lower[pos..].find("<sql>") {
        let start = pos + rel + "<sql>".len();
        let end = lower[start..].find("</sql>").map_or(text.len(), |e| start + e);
        blocks.push(Block { body: text[start..end].to_owned(), tagged_sql: true });
        pos = end;
    }
    blocks
}

/// The `"sql"` (or `"query"`) field of a reply that is a JSON object, bare
/// or in a fenced block.
fn json_blocks(text: &str, fenced: &[Block]) -> Vec<Block> {
    std::iter::once(text)
        .chain(fenced.iter().map(|b| b.body.as_str()))
        .filter(|candidate| candidate.trim_start().starts_with('{'))
        .filter_map(|candidate| serde_json::from_str::<serde_json::Value>(candidate.trim()).ok())
        .filter_map(|json| {
            ["sql", "query", "SQL"].iter().find_map(|k| json.get(k)?.as_str().map(str::to_owned))
        })
        .map(|body| Block { body, tagged_sql: true })
        .collect()
}

/// The text with fenced blocks replaced by blank lines (they were not SQL).
fn text_outside_fences(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut open: Option<(char, usize)> = None;
    for line in text.lines() {
        match (open, fence(line)) {
            (None, Some((ch, len, info))) => {
                let one_line = ch == '`' && info.ends_with(&"`".repeat(len));
                if !one_line {
                    open = Some((ch, len));
                }
                out.push('\n');
            }
            (Some((ch, len)), Some((c, l, rest))) if c == ch && l >= len && rest.is_empty() => {
                open = None;
                out.push('\n');
            }
            (Some(_), _) => out.push('\n'),
            (None, None) => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Bare SQL in prose: from the first line that starts a statement to a line
/// ending in `;`, a blank line followed by prose, or a sentence.
fn bare_sql(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let (start, first) = lines.iter().enumerate().find_map(|(i, line)| {
        let line = strip_label(line.trim());
        starts_bare_statement(line).then_some((i, line))
    })?;
    // Comment lines right above the statement belong to it.
    let mut sql = String::new();
    let mut comments_from = start;
    while comments_from > 0 && lines[comments_from - 1].trim_start().starts_with("--") {
        comments_from -= 1;
    }
    for line in &lines[comments_from..start] {
        sql.push_str(line.trim_end());
        sql.push('\n');
    }
    let mut pending_blank = false;
    for (i, line) in std::iter::once(first).chain(lines[start + 1..].iter().copied()).enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            pending_blank = true;
            continue;
        }
        if i > 0 && (is_sentence(trimmed) || (pending_blank && is_prose(trimmed))) {
            break;
        }
        if pending_blank {
            sql.push('\n');
            pending_blank = false;
        }
        sql.push_str(line.trim_end());
        sql.push('\n');
        if strip_line_comment(trimmed).trim_end().ends_with(';') {
            break;
        }
    }
    Some(sql)
}

/// The first `` `inline code` `` span that reads as a query.
fn inline_code(text: &str) -> Option<String> {
    let mut parts = text.split('`');
    parts.next();
    // Odd-numbered pieces are inside backticks.
    parts.step_by(2).find(|code| starts_like_query(code)).map(str::to_owned)
}

/// A line without a short `Label:` prefix such as `SQL:` or `SQLQuery:`.
fn strip_label(line: &str) -> &str {
    match line.split_once(':') {
        Some((label, rest))
            if label.len() <= 20
                && !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ')
                && label.split_whitespace().count() <= 2
                && starts_like_query(rest) =>
        {
            rest.trim_start()
        }
        _ => line,
    }
}

/// Whether a bare line of prose-or-SQL starts a statement. Stricter than
/// [`starts_like_query`]: "With this query..." is prose, `WITH t AS` is SQL.
fn starts_bare_statement(line: &str) -> bool {
    let Some(word) = first_word(line) else {
        return line.starts_with('(') && starts_like_query(&line[1..]);
    };
    let cased = word.chars().all(|c| c.is_ascii_uppercase())
        || word.chars().all(|c| c.is_ascii_lowercase());
    if !cased || !is_statement_word(word) {
        return false;
    }
    let rest = line[word.len()..].trim_start();
    match word.to_ascii_lowercase().as_str() {
        // "with" alone is too common in prose: require `name AS (` or RECURSIVE.
        "with" => {
            let lower = rest.to_ascii_lowercase();
            lower.starts_with("recursive")
                || lower
                    .split_whitespace()
                    .nth(1)
                    .is_some_and(|w| w == "as" || w.starts_with("as("))
                || lower.split_once('(').is_some_and(|(_, after)| after.contains(" as "))
        }
        "table" | "values" | "set" | "do" | "show" | "call" | "copy" => {
            rest.is_empty() || !rest.contains(' ') || word.chars().all(|c| c.is_ascii_uppercase())
        }
        _ => true,
    }
}

/// Whether `text` starts (after comments) with a query keyword or `(`.
fn starts_like_query(text: &str) -> bool {
    let body = skip_comments(text);
    if let Some(inner) = body.strip_prefix('(') {
        return starts_like_query(inner);
    }
    first_word(body).is_some_and(|w| QUERY_STARTS.contains(&w.to_ascii_lowercase().as_str()))
}

/// Whether `text` holds anything besides comments and whitespace.
fn has_statement(text: &str) -> bool {
    !skip_comments(text).is_empty()
}

fn is_statement_word(word: &str) -> bool {
    let lower = word.to_ascii_lowercase();
    QUERY_STARTS.contains(&lower.as_str()) || OTHER_STATEMENT_STARTS.contains(&lower.as_str())
}

/// The leading run of ASCII letters, if the text starts with one.
fn first_word(text: &str) -> Option<&str> {
    let end = text.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(text.len());
    let word = &text[..end];
    let next = text[end..].chars().next();
    // `select_count` or `tables.x` are identifiers, not keywords.
    let boundary = next.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '.'));
    (!word.is_empty() && boundary).then_some(word)
}

/// The text after leading whitespace, `--` line comments and `/* */` blocks.
fn skip_comments(mut text: &str) -> &str {
    loop {
        text = text.trim_start();
        if let Some(rest) = text.strip_prefix("--") {
            text = rest.find('\n').map_or("", |i| &rest[i + 1..]);
        } else if let Some(rest) = text.strip_prefix("/*") {
            text = rest.find("*/").map_or("", |i| &rest[i + 2..]);
        } else {
            return text;
        }
    }
}

/// A line without its trailing `--` comment (outside quotes).
fn strip_line_comment(line: &str) -> &str {
    let mut in_single = false;
    let mut in_double = false;
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\'' if !in_double => in_single = !in_single,
            b'"' if !in_single => in_double = !in_double,
            b'-' if !in_single && !in_double && bytes.get(i + 1) == Some(&b'-') => {
                return &line[..i];
            }
            _ => {}
        }
    }
    line
}

/// A line of prose after a blank line: starts like a sentence, a list item
/// or Markdown, not like a clause of SQL.
fn is_prose(line: &str) -> bool {
    if line.starts_with("**") || line.starts_with('#') || line.starts_with("* ") {
        return true;
    }
    if line.starts_with("- ") || line.starts_with("> ") {
        return true;
    }
    let numbered =
        line.split_once(". ").is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit()));
    if numbered && !line.starts_with('.') {
        return true;
    }
    first_word(line).is_some_and(is_title_case)
}

/// `Word`: one capital then lower-case letters, how sentences start and SQL keywords do not.
fn is_title_case(word: &str) -> bool {
    let mut chars = word.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.clone().next().is_some()
        && chars.all(|c| c.is_ascii_lowercase())
}

/// A line that ends the SQL even without a blank line before it: a sentence
/// (`This query counts orders.`) or a bare label (`SQLResult:`).
fn is_sentence(line: &str) -> bool {
    let ends = line.ends_with('.') || line.ends_with(':') || line.ends_with('!');
    let label =
        line.strip_suffix(':').is_some_and(|l| l.chars().all(|c| c.is_ascii_alphanumeric()));
    let sentence =
        first_word(line).is_some_and(is_title_case) && line.split_whitespace().count() >= 4;
    ends && (label || sentence)
}

/// Trims the statement, drops trailing comment lines and semicolons; `None`
/// when nothing but comments is left.
fn finish(sql: &str) -> Option<String> {
    let mut lines: Vec<&str> = sql.lines().collect();
    let mut changed = true;
    while changed {
        changed = false;
        while lines.last().is_some_and(|l| l.trim().is_empty() || l.trim_start().starts_with("--"))
        {
            lines.pop();
            changed = true;
        }
        if let Some(last) = lines.last_mut() {
            let trimmed = last.trim_end().trim_end_matches(';').trim_end();
            if trimmed.len() != last.len() {
                *last = trimmed;
                changed = true;
            }
        }
    }
    let start = lines.iter().position(|l| !l.trim().is_empty())?;
    let sql = lines[start..].join("\n");
    has_statement(&sql).then(|| sql.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(reply: &str, expected: Option<&str>) {
        assert_eq!(extract_sql(reply).as_deref(), expected, "reply: {reply:?}");
    }

    #[test]
    fn fenced_blocks_of_every_kind() {
        let cases: &[(&str, Option<&str>)] = &[
            ("```sql\nSELECT 1\n```", Some("SELECT 1")),
            ("```SQL\nSELECT 1;\n```", Some("SELECT 1")),
            ("```\nSELECT 1\n```", Some("SELECT 1")),
            ("~~~sql\nSELECT 1\n~~~", Some("SELECT 1")),
            ("~~~\nselect a from t\n~~~", Some("select a from t")),
            ("````sql\nSELECT '```'\n````", Some("SELECT '```'")),
            ("```postgresql\nSELECT 1\n```", Some("SELECT 1")),
            ("```sqlite\nSELECT 1\n```", Some("SELECT 1")),
            ("```sql title=\"q\"\nSELECT 1\n```", Some("SELECT 1")),
            ("```sql SELECT 1\n```", Some("SELECT 1")),
            ("```SELECT 1```", Some("SELECT 1")),
            ("```sql\nSELECT 1\n", Some("SELECT 1")),
            ("   ```sql\n   SELECT a\n   FROM t\n   ```", Some("SELECT a\n   FROM t")),
            ("```sql\nSELECT a\nFROM t\nWHERE b = 1;;\n```", Some("SELECT a\nFROM t\nWHERE b = 1")),
            (
                "```sql\nWITH x AS (SELECT 1) SELECT * FROM x\n```",
                Some("WITH x AS (SELECT 1) SELECT * FROM x"),
            ),
            ("```sql\nVALUES (1), (2)\n```", Some("VALUES (1), (2)")),
            ("```sql\nTABLE users\n```", Some("TABLE users")),
            ("```sql\n(SELECT 1) UNION (SELECT 2)\n```", Some("(SELECT 1) UNION (SELECT 2)")),
            ("```sql\n-- total\nSELECT sum(x) FROM t\n```", Some("-- total\nSELECT sum(x) FROM t")),
            ("```sql\n/* total */ SELECT 1\n```", Some("/* total */ SELECT 1")),
            ("```sql\nSELECT 1;\n-- done\n```", Some("SELECT 1")),
        ];
        for (reply, expected) in cases {
            check(reply, *expected);
        }
    }

    #[test]
    fn prose_around_fences() {
        let cases: &[(&str, Option<&str>)] = &[
            ("Here is the query:\n```sql\nSELECT 1\n```", Some("SELECT 1")),
            ("```sql\nSELECT 1\n```\nThis selects one.", Some("SELECT 1")),
            (
                "To count orders, select from orders:\n\n```sql\nSELECT count(*) FROM orders;\n```\n\nThis counts them.",
                Some("SELECT count(*) FROM orders"),
            ),
            ("1. First:\n   ```sql\n   SELECT 1\n   ```", Some("SELECT 1")),
            ("```python\nprint('x')\n```\n```sql\nSELECT 2\n```", Some("SELECT 2")),
            ("```text\nid | name\n```\n```\nSELECT 3\n```", Some("SELECT 3")),
            ("```sql\n-- cannot answer: no table\n```\n```sql\nSELECT 4\n```", Some("SELECT 4")),
            ("```sql\nSELECT 5\n```\nor\n```sql\nSELECT 6\n```", Some("SELECT 5")),
            ("Select the rows you need:\n```sql\nSELECT 7\n```", Some("SELECT 7")),
            ("```json\n{\"a\": 1}\n```\nSELECT 8", Some("SELECT 8")),
        ];
        for (reply, expected) in cases {
            check(reply, *expected);
        }
    }

    #[test]
    fn bare_sql_with_or_without_prose() {
        let cases: &[(&str, Option<&str>)] = &[
            ("SELECT 1", Some("SELECT 1")),
            ("  SELECT 1;  ", Some("SELECT 1")),
            ("select name from users", Some("select name from users")),
            ("SELECT a\nFROM t\nWHERE b > 1", Some("SELECT a\nFROM t\nWHERE b > 1")),
            ("SELECT a\nFROM t;\nThis returns a.", Some("SELECT a\nFROM t")),
            ("SELECT a\nFROM t\n\nThis query returns every a.", Some("SELECT a\nFROM t")),
            ("SELECT a\nFROM t\n\nExplanation: it reads t", Some("SELECT a\nFROM t")),
            ("SELECT a\nFROM t\n\n- uses t\n- returns a", Some("SELECT a\nFROM t")),
            ("SELECT a\nFROM t\n\n**Note**: none", Some("SELECT a\nFROM t")),
            ("SELECT a\nFROM t\nThis query returns every a.", Some("SELECT a\nFROM t")),
            ("SELECT a\n\nFROM t\n\nWHERE b = 1", Some("SELECT a\n\nFROM t\n\nWHERE b = 1")),
            (
                "SELECT\n  Customers.name\nFROM Customers",
                Some("SELECT\n  Customers.name\nFROM Customers"),
            ),
            ("Here is the query:\nSELECT 1", Some("SELECT 1")),
            ("Here is the query:\n\nSELECT 1;\n\nIt returns one.", Some("SELECT 1")),
            ("SQL: SELECT 1", Some("SELECT 1")),
            ("SQLQuery: SELECT 1\nSQLResult:", Some("SELECT 1")),
            (
                "WITH t AS (SELECT 1)\nSELECT * FROM t",
                Some("WITH t AS (SELECT 1)\nSELECT * FROM t"),
            ),
            (
                "WITH RECURSIVE r(n) AS (SELECT 1)\nSELECT n FROM r",
                Some("WITH RECURSIVE r(n) AS (SELECT 1)\nSELECT n FROM r"),
            ),
            ("With this query you get it:\nSELECT 1", Some("SELECT 1")),
            ("-- orders per day\nSELECT 1", Some("-- orders per day\nSELECT 1")),
            ("(SELECT 1) UNION (SELECT 2)", Some("(SELECT 1) UNION (SELECT 2)")),
            ("SELECT 'a; b' FROM t", Some("SELECT 'a; b' FROM t")),
            ("SELECT 1; -- one", Some("SELECT 1; -- one")),
            ("SELECT 1;\nSELECT 2;", Some("SELECT 1")),
            (
                "The answer uses `SELECT count(*) FROM orders` to count.",
                Some("SELECT count(*) FROM orders"),
            ),
        ];
        for (reply, expected) in cases {
            check(reply, *expected);
        }
    }

    #[test]
    fn tags_and_json() {
        let cases: &[(&str, Option<&str>)] = &[
            ("<sql>SELECT 1</sql>", Some("SELECT 1")),
            ("Answer:\n<SQL>\nSELECT 1;\n</SQL>\nDone.", Some("SELECT 1")),
            ("<sql>\n-- cannot answer: no table\n</sql>", None),
            (r#"{"sql": "SELECT 1;"}"#, Some("SELECT 1")),
            ("```json\n{\"query\": \"SELECT 2\", \"explanation\": \"x\"}\n```", Some("SELECT 2")),
            (r#"{"answer": "none"}"#, None),
        ];
        for (reply, expected) in cases {
            check(reply, *expected);
        }
    }

    #[test]
    fn statements_the_guard_must_see() {
        let cases: &[(&str, Option<&str>)] = &[
            ("```sql\nDELETE FROM users\n```", Some("DELETE FROM users")),
            ("DROP TABLE users;", Some("DROP TABLE users")),
            ("```sql\nSELECT 1\n```\n```sql\nDELETE FROM t\n```", Some("SELECT 1")),
            ("```sql\nDELETE FROM t\n```\n```sql\nSELECT 1\n```", Some("SELECT 1")),
        ];
        for (reply, expected) in cases {
            check(reply, *expected);
        }
    }

    #[test]
    fn reasoning_blocks_are_ignored() {
        let cases: &[(&str, Option<&str>)] = &[
            ("<think>maybe SELECT * FROM x</think>\nSELECT 1", Some("SELECT 1")),
            ("<think>\n```sql\nSELECT 0\n```\n</think>\n```sql\nSELECT 1\n```", Some("SELECT 1")),
            ("<THINK>hmm</THINK>SELECT 1", Some("SELECT 1")),
            ("<think>a</think><think>b SELECT 2</think>\nSELECT 1", Some("SELECT 1")),
            ("SELECT * FROM t</think>\n```sql\nSELECT 1\n```", Some("SELECT 1")),
            ("<think>still thinking about SELECT 1", None),
            ("<think>the table is missing</think>\n-- cannot answer: no table", None),
        ];
        for (reply, expected) in cases {
            check(reply, *expected);
        }
    }

    #[test]
    fn no_sql_gives_none() {
        let cases: &[&str] = &[
            "",
            "   \n ",
            "-- cannot answer: the schema has no revenue column",
            "-- cannot answer: ambiguous\n-- which year?",
            "```sql\n-- cannot answer: no such table\n```",
            "I cannot answer that from this schema.",
            "Select a table first, then ask again.",
            "With more information I could help.",
            "The values table is empty.",
            "```python\nprint(1)\n```",
            "```sql\n```",
            ";",
        ];
        for reply in cases {
            check(reply, None);
        }
    }

    #[test]
    fn reasoning_stripper_cases() {
        let cases: &[(&str, &str)] = &[
            ("a<think>b</think>c", "ac"),
            ("a<think>b", "a"),
            ("b</think>c", "c"),
            ("no tags", "no tags"),
            ("<think>x</think>y<think>z</think>w", "yw"),
        ];
        for (input, expected) in cases {
            assert_eq!(strip_reasoning(input), *expected, "{input:?}");
        }
    }
}
