//! Plain-language answer text built from the result itself, so it cannot
//! misstate a number and needs no second model call.

use serde_json::Value;

use crate::ColumnMeta;

/// How many rows the text names before summarising the rest.
const ROWS_NAMED: usize = 3;

/// Describes the whole result: empty, a single value, a single row, or a
/// count with the leading rows, and whether rows were left out.
pub(crate) fn describe(columns: &[ColumnMeta], rows: &[Vec<Value>], truncated: bool) -> String {
    match (rows, columns) {
        ([], _) => "No rows matched the question.".to_owned(),
        ([row], [column]) => format!("{} is {}.", label(&column.name), show(&row[0])),
        ([row], _) => format!("One row: {}.", pairs(columns, row)),
        (_, _) => {
            let count = if truncated {
                format!("More than {} rows matched (showing the first {}).", rows.len(), rows.len())
            } else {
                format!("{} rows.", rows.len())
            };
            let named: Vec<String> =
                rows.iter().take(ROWS_NAMED).map(|r| row_summary(columns, r)).collect();
            let lead = if rows.len() > ROWS_NAMED { "The first are" } else { "They are" };
            format!("{count} {lead}: {}.", named.join("; "))
        }
    }
}

/// `total_amount` -> `Total amount`; `count` -> `Count`.
fn label(name: &str) -> String {
    let spaced = name.replace('_', " ");
    let mut chars = spaced.trim().chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => "The value".to_owned(),
    }
}

fn pairs(columns: &[ColumnMeta], row: &[Value]) -> String {
    columns
        .iter()
        .zip(row)
        .map(|(c, v)| format!("{} {}", label(&c.name).to_lowercase(), show(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One row in a few words: the first value, then the others in parentheses.
fn row_summary(columns: &[ColumnMeta], row: &[Value]) -> String {
    match row {
        [] => String::new(),
        [only] => show(only),
        [first, rest @ ..] => {
            let details: Vec<String> = columns[1..]
                .iter()
                .zip(rest)
                .map(|(c, v)| format!("{} {}", label(&c.name).to_lowercase(), show(v)))
                .collect();
            format!("{} ({})", show(first), details.join(", "))
        }
    }
}

/// A value as it appears in the result: strings bare, NULL as "no value".
fn show(value: &Value) -> String {
    match value {
        Value::Null => "no value".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cols(names: &[&str]) -> Vec<ColumnMeta> {
        names.iter().map(|n| ColumnMeta { name: (*n).into(), type_name: "text".into() }).collect()
    }

    type Case = (Vec<ColumnMeta>, Vec<Vec<Value>>, bool, &'static str);

    #[test]
    fn texts() {
        let cases: Vec<Case> = vec![
            (cols(&["n"]), vec![], false, "No rows matched the question."),
            (cols(&["order_count"]), vec![vec![json!(42)]], false, "Order count is 42."),
            (cols(&["avg_total"]), vec![vec![json!("12.50")]], false, "Avg total is 12.50."),
            (cols(&["max"]), vec![vec![Value::Null]], false, "Max is no value."),
            (
                cols(&["city", "n"]),
                vec![vec![json!("Paris"), json!(3)]],
                false,
                "One row: city Paris, n 3.",
            ),
            (
                cols(&["city", "customers"]),
                vec![vec![json!("Paris"), json!(3)], vec![json!("Rome"), json!(2)]],
                false,
                "2 rows. They are: Paris (customers 3); Rome (customers 2).",
            ),
            (
                cols(&["name"]),
                vec![vec![json!("a")], vec![json!("b")], vec![json!("c")], vec![json!("d")]],
                true,
                "More than 4 rows matched (showing the first 4). The first are: a; b; c.",
            ),
        ];
        for (columns, rows, truncated, want) in cases {
            assert_eq!(describe(&columns, &rows, truncated), want);
        }
    }
}
