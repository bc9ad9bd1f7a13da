//! Execution accuracy: does a generated result equal a gold result?
//!
//! Row order is ignored unless the gold query orders its rows; extra generated
//! columns are ignored (each gold column must match a distinct generated
//! column, and the rows must then agree on those columns). Numbers compare
//! after rounding to 6 decimals, whatever their JSON type.

use std::collections::HashMap;

use serde_json::Value;

/// One cell in a form where equal values compare equal.
fn normalize(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => match s.parse::<f64>() {
            Ok(f) if looks_numeric(s) => number(f),
            _ => s.trim_end().to_owned(),
        },
        other => other.to_string(),
    }
}

fn looks_numeric(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
}

fn number(f: f64) -> String {
    let rounded = (f * 1e6).round() / 1e6;
    if rounded == 0.0 { "0".to_owned() } else { format!("{rounded}") }
}

fn column(rows: &[Vec<String>], i: usize) -> Vec<&str> {
    rows.iter().map(|r| r[i].as_str()).collect()
}

fn sorted<T: Ord + Clone>(v: &[T]) -> Vec<T> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// Whether `generated` answers like `gold`.
pub(crate) fn results_match(generated: &[Vec<Value>], gold: &[Vec<Value>], ordered: bool) -> bool {
    if generated.len() != gold.len() {
        return false;
    }
    if gold.is_empty() {
        return true;
    }
    let g: Vec<Vec<String>> = generated.iter().map(|r| r.iter().map(normalize).collect()).collect();
    let want: Vec<Vec<String>> = gold.iter().map(|r| r.iter().map(normalize).collect()).collect();
    let (g_cols, w_cols) = (g[0].len(), want[0].len());
    if g_cols < w_cols {
        return false;
    }
    // Map each gold column to an unused generated column with the same values.
    let mut used = vec![false; g_cols];
    let mut mapping = Vec::with_capacity(w_cols);
    let g_sorted: HashMap<usize, Vec<&str>> =
        (0..g_cols).map(|k| (k, sorted(&column(&g, k)))).collect();
    for j in 0..w_cols {
        let target = sorted(&column(&want, j));
        let Some(k) = (0..g_cols).find(|&k| !used[k] && g_sorted[&k] == target) else {
            return false;
        };
        used[k] = true;
        mapping.push(k);
    }
    let projected: Vec<Vec<String>> =
        g.iter().map(|r| mapping.iter().map(|&k| r[k].clone()).collect()).collect();
    if ordered { projected == want } else { sorted(&projected) == sorted(&want) }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn matching_rules() {
        let cases: Vec<(Value, Value, bool, bool)> = vec![
            (json!([[1, "a"], [2, "b"]]), json!([[1, "a"], [2, "b"]]), true, true),
            (json!([[2, "b"], [1, "a"]]), json!([[1, "a"], [2, "b"]]), false, true),
            (json!([[2, "b"], [1, "a"]]), json!([[1, "a"], [2, "b"]]), true, false),
            (json!([["a", 1, "x"], ["b", 2, "y"]]), json!([[1], [2]]), false, true),
            (json!([[1], [2]]), json!([[1, "a"], [2, "b"]]), false, false),
            (json!([["1.50"]]), json!([[1.5]]), false, true),
            (json!([[0.3333333333]]), json!([["0.333333"]]), false, true),
            (json!([[1, 2], [2, 1]]), json!([[1, 1], [2, 2]]), false, false),
            (json!([]), json!([]), false, true),
            (json!([[1]]), json!([]), false, false),
            (json!([[null]]), json!([[null]]), false, true),
        ];
        for (g, w, ordered, want) in cases {
            let rows = |v: &Value| -> Vec<Vec<Value>> {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| r.as_array().cloned().unwrap_or_default())
                    .collect()
            };
            assert_eq!(
                results_match(&rows(&g), &rows(&w), ordered),
                want,
                "{g} vs {w} ordered={ordered}"
            );
        }
    }
}
