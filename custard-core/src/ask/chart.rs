//! Chart suggestions: declarative specs chosen by rules from a result's shape.
//! No generated code is ever executed; a client draws the spec.

use serde::{Deserialize, Serialize};

use crate::ColumnMeta;

/// The kind of chart a result suits. Serialised as its [`as_str`](Self::as_str)
/// name, which hosts store and send (the server's history and API).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChartKind {
    /// A measure over time.
    Line,
    /// A measure per category.
    Bar,
}

impl ChartKind {
    /// Every kind, for hosts that list them (an API schema).
    pub const ALL: &'static [ChartKind] = &[ChartKind::Line, ChartKind::Bar];

    /// The lowercase name used on the wire and in the UI.
    pub fn as_str(self) -> &'static str {
        // A new kind fails to compile here until it is named, and a test
        // checks that `ALL` holds it with its serde name.
        match self {
            ChartKind::Line => "line",
            ChartKind::Bar => "bar",
        }
    }
}

/// A chart to draw: which column goes along x and which measures go up y.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChartSpec {
    /// Line or bar.
    pub kind: ChartKind,
    /// The column along the x axis.
    pub x: String,
    /// The measure columns drawn against x.
    pub y: Vec<String>,
}

/// The most categories a bar chart stays readable with.
const MAX_BARS: usize = 50;

/// Picks a chart for a result: a time column and a measure make a line, a
/// category and a measure make bars, anything else none.
pub(crate) fn suggest(columns: &[ColumnMeta], rows: usize) -> Option<ChartSpec> {
    if rows < 2 || columns.len() < 2 {
        return None;
    }
    let time = columns.iter().position(is_time);
    let measures: Vec<usize> =
        (0..columns.len()).filter(|&i| Some(i) != time && is_measure(&columns[i])).collect();
    if measures.is_empty() {
        return None;
    }
    // Measures exclude the time column, and a category is never a measure.
    let y: Vec<String> = measures.iter().map(|&i| columns[i].name.clone()).collect();
    if let Some(t) = time {
        return Some(ChartSpec { kind: ChartKind::Line, x: columns[t].name.clone(), y });
    }
    let category = columns.iter().position(is_category)?;
    (rows <= MAX_BARS).then(|| ChartSpec {
        kind: ChartKind::Bar,
        x: columns[category].name.clone(),
        y,
    })
}

fn type_of(c: &ColumnMeta) -> String {
    c.type_name.to_ascii_lowercase()
}

fn is_time(c: &ColumnMeta) -> bool {
    let t = type_of(c);
    let name = c.name.to_ascii_lowercase();
    t.starts_with("date")
        || t.starts_with("timestamp")
        || (is_integer(&t) && matches!(name.as_str(), "year" | "month" | "yr" | "week" | "quarter"))
}

fn is_integer(t: &str) -> bool {
    matches!(t, "int2" | "int4" | "int8" | "integer" | "bigint" | "smallint")
}

fn is_measure(c: &ColumnMeta) -> bool {
    let t = type_of(c);
    let numeric = is_integer(&t)
        || t.starts_with("numeric")
        || t.starts_with("decimal")
        || matches!(t.as_str(), "float4" | "float8" | "real" | "double precision" | "money");
    // Identifiers are numbers but not measures.
    let name = c.name.to_ascii_lowercase();
    numeric && !(name == "id" || name.ends_with("_id") || (name.ends_with("id") && name.len() <= 6))
}

fn is_category(c: &ColumnMeta) -> bool {
    !is_time(c) && !is_measure(c) && !matches!(type_of(c).as_str(), "json" | "jsonb" | "bytea")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(spec: &[(&str, &str)]) -> Vec<ColumnMeta> {
        spec.iter().map(|(n, t)| ColumnMeta { name: (*n).into(), type_name: (*t).into() }).collect()
    }

    type Case<'a> = (&'a [(&'a str, &'a str)], usize, Option<ChartSpec>);

    /// Hosts store and send a kind by its serde name and list `ALL` in their schemas.
    #[test]
    fn kinds_are_named_once() {
        for &kind in ChartKind::ALL {
            let name = serde_json::to_value(kind).expect("a name");
            assert_eq!(name, kind.as_str());
            assert_eq!(serde_json::from_value::<ChartKind>(name).expect("a kind"), kind);
        }
        // Every variant is in `ALL` (the match stops compiling when one is added).
        let listed = |kind: ChartKind| match kind {
            ChartKind::Line | ChartKind::Bar => ChartKind::ALL.contains(&kind),
        };
        assert!(listed(ChartKind::Line) && listed(ChartKind::Bar));
        assert!(serde_json::from_str::<ChartKind>(r#""pie""#).is_err());
    }

    #[test]
    fn chart_rules() {
        let line = |x: &str, y: &[&str]| {
            Some(ChartSpec {
                kind: ChartKind::Line,
                x: x.into(),
                y: y.iter().map(|s| (*s).into()).collect(),
            })
        };
        let bar = |x: &str, y: &[&str]| {
            Some(ChartSpec {
                kind: ChartKind::Bar,
                x: x.into(),
                y: y.iter().map(|s| (*s).into()).collect(),
            })
        };
        let cases: &[Case] = &[
            (&[("month", "timestamp"), ("revenue", "numeric")], 12, line("month", &["revenue"])),
            (
                &[("day", "date"), ("orders", "int8"), ("revenue", "numeric")],
                30,
                line("day", &["orders", "revenue"]),
            ),
            (&[("year", "int4"), ("n", "int8")], 5, line("year", &["n"])),
            (&[("city", "text"), ("customers", "int8")], 7, bar("city", &["customers"])),
            (&[("city", "varchar"), ("customers", "int8")], 500, None),
            (&[("city", "text"), ("customers", "int8")], 1, None),
            (&[("name", "text"), ("email", "text")], 10, None),
            (&[("count", "int8")], 1, None),
            (&[("customer_id", "int4"), ("name", "text")], 10, None),
        ];
        for (columns, rows, want) in cases {
            assert_eq!(suggest(&cols(columns), *rows), *want, "{columns:?} x {rows}");
        }
    }
}
