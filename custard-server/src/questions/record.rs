//! What the history keeps of an answer, as JSON in a fixed shape: the result
//! (columns, the first rows, counts, the chart) and the step timings. The
//! API returns them as they are (in `AnswerView`, and the stored result in
//! `QueryDetail`), and the History page reads them back, so their shape is
//! part of the API.

use std::time::Instant;

use custard_core::{Answer, ChartSpec, ColumnMeta};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::ms;

/// A result: columns, rows, counts and a chart.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ResultView {
    pub(crate) columns: Vec<ColumnView>,
    /// The rows, each a list of JSON values in column order.
    pub(crate) rows: Vec<Vec<Value>>,
    /// Rows in the answer (the rows listed may be fewer in the history).
    pub(crate) row_count: usize,
    /// Whether rows were left out by a cap.
    pub(crate) truncated: bool,
    /// A chart for the result, when its shape suits one.
    #[schema(required)]
    pub(crate) chart: Option<ChartView>,
}

impl ResultView {
    /// Columns, the first `max_rows` rows, counts and chart of an answer.
    pub(crate) fn new(answer: &Answer, max_rows: usize) -> Self {
        ResultView {
            columns: answer.columns.iter().map(ColumnView::from).collect(),
            rows: answer.rows[..answer.rows.len().min(max_rows)].to_vec(),
            row_count: answer.rows.len(),
            truncated: answer.truncated,
            chart: answer.chart.as_ref().map(ChartView::from),
        }
    }
}

/// A result column.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ColumnView {
    pub(crate) name: String,
    /// The database's name for its type (`int4`, `numeric`, `text`, ...).
    #[serde(rename = "type")]
    pub(crate) type_name: String,
}

impl From<&ColumnMeta> for ColumnView {
    fn from(c: &ColumnMeta) -> Self {
        ColumnView { name: c.name.clone(), type_name: c.type_name.clone() }
    }
}

/// A chart to draw.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChartView {
    /// `line` or `bar`.
    #[serde(rename = "type")]
    #[schema(example = "bar")]
    pub(crate) kind: &'static str,
    /// The column along the x axis.
    pub(crate) x: String,
    /// The measure columns drawn against x.
    pub(crate) y: Vec<String>,
}

impl From<&ChartSpec> for ChartView {
    fn from(c: &ChartSpec) -> Self {
        ChartView { kind: c.kind.as_str(), x: c.x.clone(), y: c.y.clone() }
    }
}

/// Milliseconds spent per step of answering.
#[derive(Debug, Serialize, ToSchema)]
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
