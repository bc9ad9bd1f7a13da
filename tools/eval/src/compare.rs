//! Execution accuracy: does a generated result equal a gold result?
//!
//! Row order is ignored unless the gold query orders its rows; extra generated
//! columns are ignored (each gold column must match a distinct generated
//! column, and the rows must then agree on those columns). Integers compare
//! exactly and other numbers to 6 significant digits, whatever their JSON type;
//! NULL, booleans and strings stay distinct.

use serde_json::Value;

/// One cell in a form where equal values compare equal. Types stay apart
/// (NULL is not the string "null"); integers compare exactly; other numbers
/// after rounding to 6 significant digits.
fn normalize(v: &Value) -> String {
    match v {
        Value::Null => "Z".to_owned(),
        Value::Bool(b) => format!("B:{b}"),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => format!("N:{i}"),
            (None, Some(u)) => format!("N:{u}"),
            _ => number(n.as_f64().unwrap_or(f64::NAN)),
        },
        // Exact numerics arrive as strings: compare them as numbers.
        Value::String(s) if looks_numeric(s) => match s.parse::<i64>() {
            Ok(i) => format!("N:{i}"),
            Err(_) => s.parse::<f64>().map_or_else(|_| format!("S:{s}"), number),
        },
        Value::String(s) => format!("S:{}", s.trim_end()),
        other => format!("J:{other}"),
    }
}

fn looks_numeric(s: &str) -> bool {
    !s.is_empty()
        && s.chars().any(|c| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
}

fn number(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        return format!("N:{}", f as i64);
    }
    format!("N:{f:.6e}")
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
    // Candidate generated columns per gold column: the same values, as a multiset.
    let g_sorted: Vec<Vec<&str>> = (0..g_cols).map(|k| sorted(&column(&g, k))).collect();
    let candidates: Vec<Vec<usize>> = (0..w_cols)
        .map(|j| {
            let target = sorted(&column(&want, j));
            (0..g_cols).filter(|&k| g_sorted[k] == target).collect()
        })
        .collect();
    let mut mapping = Vec::with_capacity(w_cols);
    assign(&candidates, &mut vec![false; g_cols], &mut mapping, &|mapping: &[usize]| {
        let projected: Vec<Vec<&str>> =
            g.iter().map(|r| mapping.iter().map(|&k| r[k].as_str()).collect()).collect();
        let want: Vec<Vec<&str>> =
            want.iter().map(|r| r.iter().map(String::as_str).collect()).collect();
        if ordered { projected == want } else { sorted(&projected) == sorted(&want) }
    })
}

/// Tries every assignment of distinct generated columns to the gold columns
/// (backtracking: results have few columns) until `accept` takes one.
fn assign(
    candidates: &[Vec<usize>],
    used: &mut Vec<bool>,
    mapping: &mut Vec<usize>,
    accept: &dyn Fn(&[usize]) -> bool,
) -> bool {
    let Some(options) = candidates.get(mapping.len()) else { return accept(mapping) };
    for &k in options {
        if used[k] {
            continue;
        }
        used[k] = true;
        mapping.push(k);
        if assign(candidates, used, mapping, accept) {
            return true;
        }
        mapping.pop();
        used[k] = false;
    }
    false
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
            (json!([[0.3333333333]]), json!([["0.3333333"]]), false, true),
            (json!([[1, 2], [2, 1]]), json!([[1, 1], [2, 2]]), false, false),
            (json!([]), json!([]), false, true),
            (json!([[1]]), json!([]), false, false),
            (json!([[null]]), json!([[null]]), false, true),
            (json!([[1, 2, 1], [2, 1, 2]]), json!([[1, 1], [2, 2]]), false, true),
            (json!([[null]]), json!([["null"]]), false, false),
            (json!([[true]]), json!([["true"]]), false, false),
            (json!([[9007199254740993_i64]]), json!([[9007199254740992_i64]]), false, false),
            (json!([[1e-7]]), json!([[4e-7]]), false, false),
            (json!([["12.50"]]), json!([[12.5]]), false, true),
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
