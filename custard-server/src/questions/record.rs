//! What the history keeps of an answer, as JSON in a fixed shape: the result
//! (columns, the first rows, counts, the chart) and the step timings. The
//! API returns them as they are (in `AnswerView`, and the stored result in
//! `QueryDetail`), and the History page reads them back, so their shape is
//! part of the API.
//!
//! One type per shape serves all three: a [`ResultView`] borrows an answer's
//! rows to write them (nothing is copied on the way to the JSON text), owns
//! what it reads back, and moves a finished answer's rows into the API's
//! answer. Stored JSON is read with serde defaults, so older rows that lack a
//! field still read.

use std::borrow::Cow;
use std::time::Instant;

use custard_core::{Answer, ChartKind, ChartSpec, ColumnMeta};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use super::ms;

/// A result: columns, rows, counts and a chart.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub(crate) struct ResultView<'a> {
    #[serde(default)]
    #[schema(required)]
    pub(crate) columns: Vec<ColumnView<'a>>,
    /// The rows, each a list of JSON values in column order.
    #[serde(default)]
    #[schema(value_type = Vec<Vec<Value>>, required)]
    pub(crate) rows: Cow<'a, [Vec<Value>]>,
    /// Rows in the answer (the rows listed may be fewer in the history).
    #[serde(default)]
    #[schema(required)]
    pub(crate) row_count: usize,
    /// Whether rows were left out by a cap.
    #[serde(default)]
    #[schema(required)]
    pub(crate) truncated: bool,
    /// A chart for the result, when its shape suits one.
    #[serde(default, deserialize_with = "known_chart")]
    #[schema(required)]
    pub(crate) chart: Option<ChartView<'a>>,
}

impl<'a> ResultView<'a> {
    /// Columns, the first `max_rows` rows, counts and chart of an answer,
    /// borrowed from it.
    pub(crate) fn new(answer: &'a Answer, max_rows: usize) -> Self {
        ResultView {
            columns: answer.columns.iter().map(ColumnView::from).collect(),
            rows: Cow::Borrowed(&answer.rows[..answer.rows.len().min(max_rows)]),
            row_count: answer.rows.len(),
            truncated: answer.truncated,
            chart: answer.chart.as_ref().map(ChartView::from),
        }
    }
}

impl<'a> ResultView<'a> {
    /// [`ResultView::new`] with at most `max_bytes` of rows (as JSON) too:
    /// the history keeps what is needed to show an answer again, and one
    /// answer of huge cells must not grow the store by megabytes. The
    /// `row_count` stays the answer's.
    pub(crate) fn within(answer: &'a Answer, max_rows: usize, max_bytes: usize) -> Self {
        let mut view = ResultView::new(answer, max_rows);
        let mut bytes = 0;
        let kept = view
            .rows
            .iter()
            .take_while(|row| {
                bytes += serde_json::to_string(row).map_or(usize::MAX, |t| t.len() + 1);
                bytes <= max_bytes
            })
            .count();
        view.rows = Cow::Borrowed(&answer.rows[..kept]);
        view
    }
}

impl ResultView<'static> {
    /// A whole result, its parts moved in (an answer taken apart).
    pub(crate) fn owned(
        columns: Vec<ColumnMeta>,
        rows: Vec<Vec<Value>>,
        truncated: bool,
        chart: Option<ChartSpec>,
    ) -> Self {
        ResultView {
            columns: columns.into_iter().map(ColumnView::from).collect(),
            row_count: rows.len(),
            rows: Cow::Owned(rows),
            truncated,
            chart: chart.map(ChartView::from),
        }
    }

    /// A stored result (`result_json`) read back. A missing field reads as
    /// its default and a chart of a kind this server does not draw as none;
    /// JSON that is not a result is an error.
    pub(crate) fn read(json: &str) -> serde_json::Result<Self> {
        let mut result: Self = serde_json::from_str(json)?;
        // Never fewer rows in the answer than listed (a row without `row_count`).
        result.row_count = result.row_count.max(result.rows.len());
        Ok(result)
    }
}

/// A stored chart, or none when it is not one this server knows (a kind
/// written by a newer version); the rest of the result still reads.
fn known_chart<'de, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<ChartView<'a>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored<'a> {
        Known(ChartView<'a>),
        Other(serde::de::IgnoredAny),
    }
    Ok(match Option::<Stored<'a>>::deserialize(d)? {
        Some(Stored::Known(chart)) => Some(chart),
        Some(Stored::Other(_)) | None => None,
    })
}

/// A result column.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ColumnView<'a> {
    #[serde(default)]
    #[schema(value_type = String, required)]
    pub(crate) name: Cow<'a, str>,
    /// The database's name for its type (`int4`, `numeric`, `text`, ...).
    #[serde(rename = "type", default)]
    #[schema(value_type = String, required)]
    pub(crate) type_name: Cow<'a, str>,
}

impl<'a> From<&'a ColumnMeta> for ColumnView<'a> {
    fn from(c: &'a ColumnMeta) -> Self {
        ColumnView { name: Cow::Borrowed(&c.name), type_name: Cow::Borrowed(&c.type_name) }
    }
}

impl From<ColumnMeta> for ColumnView<'static> {
    fn from(c: ColumnMeta) -> Self {
        ColumnView { name: Cow::Owned(c.name), type_name: Cow::Owned(c.type_name) }
    }
}

/// A chart to draw.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ChartView<'a> {
    /// `line` or `bar`.
    #[serde(rename = "type")]
    #[schema(value_type = ChartKindSchema)]
    pub(crate) kind: ChartKind,
    /// The column along the x axis.
    #[schema(value_type = String)]
    pub(crate) x: Cow<'a, str>,
    /// The measure columns drawn against x.
    #[schema(value_type = Vec<String>)]
    pub(crate) y: Cow<'a, [String]>,
}

impl<'a> From<&'a ChartSpec> for ChartView<'a> {
    fn from(c: &'a ChartSpec) -> Self {
        ChartView { kind: c.kind, x: Cow::Borrowed(&c.x), y: Cow::Borrowed(&c.y) }
    }
}

impl From<ChartSpec> for ChartView<'static> {
    fn from(c: ChartSpec) -> Self {
        ChartView { kind: c.kind, x: Cow::Owned(c.x), y: Cow::Owned(c.y) }
    }
}

/// The schema of core's [`ChartKind`]: a string, one of its names.
pub(crate) struct ChartKindSchema;

impl PartialSchema for ChartKindSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(ChartKind::ALL.iter().map(|k| k.as_str())))
            .description(Some("The kind of chart: `line` (a measure over time) or `bar` (a measure per category)."))
            .into()
    }
}

impl ToSchema for ChartKindSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ChartKind")
    }
}

/// Milliseconds spent per step of answering.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Timings {
    pub(crate) retrieve_ms: f64,
    pub(crate) prompt_ms: f64,
    pub(crate) generate_ms: f64,
    pub(crate) guard_ms: f64,
    pub(crate) execute_ms: f64,
    pub(crate) answer_ms: f64,
    /// The pipeline's total.
    pub(crate) pipeline_ms: f64,
    /// The request's total, with the history and the store.
    pub(crate) total_ms: f64,
}

impl Timings {
    /// The answer's step timings, and the total since `started`.
    pub(crate) fn new(answer: &Answer, started: Instant) -> Self {
        let t = &answer.timings;
        Timings {
            retrieve_ms: ms(t.retrieve),
            prompt_ms: ms(t.prompt),
            generate_ms: ms(t.generate),
            guard_ms: ms(t.guard),
            execute_ms: ms(t.execute),
            answer_ms: ms(t.answer),
            pipeline_ms: ms(t.total),
            total_ms: ms(started.elapsed()),
        }
    }
}

/// The timings the history keeps of a question (`timings_json`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum StoredTimings {
    /// An answer's: every step.
    Answered(Timings),
    /// A failed question's: only the request's total.
    Failed {
        /// The request's total.
        total_ms: f64,
    },
}

impl StoredTimings {
    /// Stored timings read back, when they are timings.
    pub(crate) fn read(json: &str) -> Option<Self> {
        serde_json::from_str(json).ok()
    }

    /// The request's total.
    pub(crate) fn total_ms(&self) -> f64 {
        match self {
            StoredTimings::Answered(t) => t.total_ms,
            StoredTimings::Failed { total_ms } => *total_ms,
        }
    }
}

/// The JSON text of a value, its fields in declaration order: what the
/// history stores, and the API's answer event.
pub(crate) fn json_text(value: &impl Serialize) -> String {
    // These types have string keys and infallible fields: this cannot fail,
    // and a stored `null` would read as no result anyway.
    serde_json::to_string(value).unwrap_or_else(|e| {
        tracing::error!("could not write JSON: {e}");
        "null".to_owned()
    })
}

#[cfg(test)]
mod tests {
    use custard_core::{ChartKind, Timings as StepTimings};
    use serde_json::json;

    use super::*;

    fn answer() -> Answer {
        Answer {
            text: "2 rows".to_owned(),
            sql: "SELECT a, b FROM t".to_owned(),
            columns: vec![
                ColumnMeta { name: "a".to_owned(), type_name: "int4".to_owned() },
                ColumnMeta { name: "b".to_owned(), type_name: "numeric".to_owned() },
            ],
            rows: vec![vec![json!(1), json!("12.50")], vec![json!(null), json!("-3")]],
            truncated: false,
            chart: Some(ChartSpec {
                kind: ChartKind::Bar,
                x: "a".to_owned(),
                y: vec!["b".to_owned()],
            }),
            engine: "offline".to_owned(),
            attempts: vec![],
            timings: StepTimings::default(),
        }
    }

    /// What the API answers and the history stores, byte for byte.
    const STORED: &str = concat!(
        r#"{"columns":[{"name":"a","type":"int4"},{"name":"b","type":"numeric"}],"#,
        r#""rows":[[1,"12.50"]],"row_count":2,"truncated":false,"#,
        r#""chart":{"type":"bar","x":"a","y":["b"]}}"#
    );

    #[test]
    fn the_history_keeps_rows_within_a_byte_budget() {
        let answer = answer();
        // `[1,"12.50"]` and a line: 12 bytes; the second row does not fit in 20.
        let view = ResultView::within(&answer, 10, 20);
        assert_eq!(view.rows.len(), 1);
        assert_eq!(view.row_count, 2, "the answer's count stays");
        assert_eq!(ResultView::within(&answer, 10, 11).rows.len(), 0);
        assert_eq!(ResultView::within(&answer, 1, 1 << 20).rows.len(), 1);
    }

    #[test]
    fn a_result_is_written_from_the_answer_it_borrows() {
        let answer = answer();
        let view = ResultView::new(&answer, 1);
        assert!(matches!(view.rows, Cow::Borrowed(_)), "the rows are not copied");
        assert_eq!(json_text(&view), STORED);
        // Moved out of the answer, all rows: the same JSON.
        let Answer { columns, rows, truncated, chart, .. } = answer.clone();
        let owned = ResultView::owned(columns, rows, truncated, chart);
        assert_eq!(json_text(&owned), json_text(&ResultView::new(&answer, usize::MAX)));
        let empty = Answer { chart: None, rows: vec![], ..answer };
        assert_eq!(
            json_text(&ResultView::new(&empty, 0)),
            r#"{"columns":[{"name":"a","type":"int4"},{"name":"b","type":"numeric"}],"rows":[],"row_count":0,"truncated":false,"chart":null}"#
        );
    }

    #[test]
    fn stored_results_read_back() {
        let read = ResultView::read(STORED).expect("a stored result");
        assert_eq!(json_text(&read), STORED);
        let chart = read.chart.as_ref().expect("a chart");
        assert_eq!(
            (chart.kind, &*chart.x, &*chart.y),
            (ChartKind::Bar, "a", &["b".to_owned()][..])
        );

        // Written by `json!` before: keys in alphabetical order.
        let sorted = r#"{"chart":{"type":"line","x":"d","y":["n"]},"columns":[{"name":"d","type":"date"},{"name":"n","type":"int8"}],"row_count":1,"rows":[["2026-01-01",3]],"truncated":true}"#;
        let read = ResultView::read(sorted).expect("an older result");
        assert_eq!((read.row_count, read.truncated, read.rows.len()), (1, true, 1));
        assert_eq!(read.chart.map(|c| c.kind), Some(ChartKind::Line));

        // An old row without a chart, or without counts.
        let old = ResultView::read(r#"{"columns":[{"name":"a","type":"int4"}],"rows":[[1],[2]]}"#)
            .expect("an old result");
        assert!(old.chart.is_none());
        assert_eq!((old.columns[0].name.as_ref(), old.row_count, old.truncated), ("a", 2, false));

        // A chart this server does not draw is none; the rows still read.
        let pie = ResultView::read(
            r#"{"rows":[[1]],"row_count":1,"chart":{"type":"pie","x":"a","y":[]}}"#,
        )
        .expect("a result with a newer chart");
        assert!(pie.chart.is_none());
        assert_eq!(pie.rows.as_ref(), &[vec![json!(1)]]);

        for broken in ["", "{", "null", "[1]", r#"{"rows":"many"}"#] {
            assert!(ResultView::read(broken).is_err(), "{broken:?}");
        }
    }

    #[test]
    fn stored_timings_read_back() {
        let answered = StoredTimings::Answered(Timings::new(&answer(), Instant::now()));
        let text = json_text(&answered);
        assert!(text.starts_with(r#"{"retrieve_ms":0.0,"prompt_ms":0.0,"#), "{text}");
        let read = StoredTimings::read(&text).expect("timings");
        assert!(matches!(read, StoredTimings::Answered(_)));
        assert_eq!(read.total_ms(), answered.total_ms());

        let failed = json_text(&StoredTimings::Failed { total_ms: 1.5 });
        assert_eq!(failed, r#"{"total_ms":1.5}"#);
        assert_eq!(StoredTimings::read(&failed).map(|t| t.total_ms()), Some(1.5));
        // An older answer's timings with a step missing still give the total.
        let partial = r#"{"answer_ms":1.0,"total_ms":42.0}"#;
        assert_eq!(StoredTimings::read(partial).map(|t| t.total_ms()), Some(42.0));
        for broken in ["", "{}", r#"{"total_ms":"soon"}"#, "null"] {
            assert!(StoredTimings::read(broken).is_none(), "{broken:?}");
        }
    }

    #[test]
    fn the_chart_kind_schema_lists_every_kind() {
        let schema = serde_json::to_value(ChartKindSchema::schema()).expect("a schema");
        let names: Vec<Value> = ChartKind::ALL.iter().map(|k| json!(k)).collect();
        assert_eq!(schema["enum"], Value::Array(names));
        assert_eq!(ChartKindSchema::name(), "ChartKind");
    }
}
