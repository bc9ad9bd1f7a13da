//! Text renderings of results, for assistants that read a tool's text
//! rather than its structured content.

use serde_json::Value;

use crate::ResultColumn;

/// Rows shown in a result's text; the structured content has them all.
const TEXT_ROWS: usize = 20;
/// Characters shown of one cell.
const CELL_CHARS: usize = 60;

/// The first rows of a result as a Markdown table, with the row count (and
/// whether a cap cut the result short).
///
/// ```
/// use custard_mcp::{ResultColumn, table_text};
/// let columns = vec![ResultColumn { name: "n".into(), type_name: "int8".into() }];
/// let text = table_text(&columns, &[vec![serde_json::json!(42)]], false);
/// assert_eq!(text, "| n |\n| --- |\n| 42 |\n\n1 row.");
/// ```
pub fn table_text(columns: &[ResultColumn], rows: &[Vec<Value>], truncated: bool) -> String {
    let mut out = String::new();
    if !columns.is_empty() {
        let names: Vec<String> =
            columns.iter().map(|c| cell(&Value::String(c.name.clone()))).collect();
        out.push_str(&format!("| {} |\n", names.join(" | ")));
        out.push_str(&format!("|{}\n", " --- |".repeat(columns.len())));
        for row in rows.iter().take(TEXT_ROWS) {
            let cells: Vec<String> = row.iter().map(cell).collect();
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        out.push('\n');
    }
    let count = match rows.len() {
        1 => "1 row".to_owned(),
        n => format!("{n} rows"),
    };
    out.push_str(&count);
    if rows.len() > TEXT_ROWS {
        out.push_str(&format!(" (the first {TEXT_ROWS} shown; all are in the structured content)"));
    }
    if truncated {
        out.push_str("; cut short by a row or byte cap, so there are more");
    }
    out.push('.');
    out
}

/// One cell: text as is, anything else as JSON; `|` and line breaks escaped,
/// long values cut.
fn cell(value: &Value) -> String {
    let text = match value {
        Value::Null => "NULL".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut cut: String = text.chars().take(CELL_CHARS).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut.replace('|', "\\|").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn long_results_show_their_first_rows_and_say_so() {
        let columns = vec![ResultColumn { name: "a|b".into(), type_name: "text".into() }];
        let rows: Vec<Vec<Value>> = (0..25).map(|i| vec![json!(format!("v{i}\nx"))]).collect();
        let text = table_text(&columns, &rows, true);
        assert!(text.starts_with("| a\\|b |\n| --- |\n| v0 x |\n"), "{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("| v")).count(), TEXT_ROWS);
        assert!(text.ends_with("25 rows (the first 20 shown; all are in the structured content); cut short by a row or byte cap, so there are more."), "{text}");
        assert_eq!(cell(&json!("x".repeat(100))).chars().count(), CELL_CHARS + 1);
        assert_eq!(cell(&Value::Null), "NULL");
    }
}
