//! CSV export: the stored SQL of an answered question checked again by the
//! server's guard, rerun on the connection's agents through the executor
//! questions use ([`crate::pipelines::Pipelines::executor`]), and streamed row
//! batch by row batch (RFC 4180, CRLF line ends, a header row). Text a
//! spreadsheet would run as a formula is prefixed with `'`.

use std::borrow::Cow;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use custard_core::format::{CellText, is_numeric_type};
use custard_core::{Executor, Guard, RowBatch, RunLimits};
use futures_util::stream::BoxStream;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use crate::auth::CurrentUser;
use crate::error::{AppError, ErrorCode};
use crate::pipelines::stored_schema;
use crate::state::AppState;
use crate::store::QueryId;

/// Rows a CSV export may stream (the agent's own cap may be lower).
const EXPORT_ROWS: u64 = 100_000_000;

/// A CSV download: its file name and its bytes as they come from the agent.
pub(crate) struct CsvExport {
    /// Named after the question and the day ([`crate::download::csv_name`]).
    pub(crate) filename: String,
    /// The CSV, the header row first; an error cuts it short.
    pub(crate) bytes: BoxStream<'static, std::io::Result<Bytes>>,
}

impl std::fmt::Debug for CsvExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvExport").field("filename", &self.filename).finish_non_exhaustive()
    }
}

impl IntoResponse for CsvExport {
    /// The CSV as an attachment, streamed.
    fn into_response(self) -> Response {
        crate::download::csv_attachment(&self.filename, Body::from_stream(self.bytes))
    }
}

/// The CSV export of question `id` (it must have been answered): the
/// stored SQL checked again by the server's guard and rerun through the
/// agent. Errors before the header row (agent offline, the guard refusing)
/// are errors here; after it, they can only cut the bytes short.
pub(crate) async fn export_csv(
    state: &AppState,
    current: &CurrentUser,
    id: &str,
) -> Result<CsvExport, AppError> {
    let inner = state.inner();
    let q = inner.store.get_query(current.org(), &QueryId::from(id.to_owned())).await?;
    let Some(sql) = q.record.sql.clone().filter(|_| q.record.outcome == "ok") else {
        return Err(AppError::new(ErrorCode::Validation, "this question has no answer to export"));
    };
    let connection = inner.store.get_connection(current.org(), &q.record.connection_id).await?;
    let schema = stored_schema(inner.store.as_ref(), &connection).await?;
    // The server's guard checks again what it sends; the agent checks once more.
    let guard = Guard::builder(connection.dialect)
        .max_rows(EXPORT_ROWS)
        .schema(schema)
        .build()
        .map_err(AppError::internal)?;
    let checked = guard.check(&sql).map_err(|r| {
        AppError::new(
            ErrorCode::QueryRejected,
            format!("the stored SQL no longer passes the guard: {r}"),
        )
    })?;
    let (tx, mut rx) = mpsc::channel::<RowBatch>(4);
    // The executor questions run on, so exports reach the agents the same way.
    let executor = inner.pipelines.executor(&connection);
    let limits = RunLimits {
        max_rows: EXPORT_ROWS,
        max_bytes: u64::MAX,
        timeout: Duration::from_secs(inner.config.query_timeout_secs.max(1) * 10),
        ..RunLimits::default()
    };
    // Aborted when the response is dropped (the client went away), which
    // cancels the query on the agent.
    let mut run =
        AbortOnDropHandle::new(tokio::spawn(
            async move { executor.run(&checked, &limits, tx).await },
        ));
    // Wait for the header row, so an offline agent is an error status, not an empty file.
    let first = rx.recv().await;
    let columns = match first {
        Some(RowBatch::Columns(columns)) => columns,
        _ => {
            drop(rx);
            let result = (&mut run).await.map_err(AppError::internal)?;
            return Err(match result {
                Err(e) => AppError::from_exec(e),
                Ok(_) => AppError::internal("the agent sent no columns"),
            });
        }
    };
    let names: Vec<Cow<'_, str>> = columns.iter().map(|c| text_cell(c.name.as_str())).collect();
    let header_line = csv_bytes(&[names.iter().map(|n| n.as_bytes()).collect::<Vec<_>>()])
        .map_err(AppError::internal)?;
    let numeric: Vec<bool> = columns.iter().map(|c| is_numeric_type(&c.type_name)).collect();
    let stream = futures_util::stream::unfold(
        (Some(header_line), rx, Some(run)),
        move |(header_line, mut rx, run)| {
            let numeric = numeric.clone();
            async move {
                if let Some(bytes) = header_line {
                    return Some((
                        Ok::<Bytes, std::io::Error>(Bytes::from(bytes)),
                        (None, rx, run),
                    ));
                }
                match rx.recv().await {
                    Some(RowBatch::Rows(rows)) => {
                        Some((csv_rows(&rows, &numeric).map(Bytes::from), (None, rx, run)))
                    }
                    Some(RowBatch::Columns(_)) => Some((Ok(Bytes::new()), (None, rx, run))),
                    None => {
                        // The rows ended: a failure now can only cut the body short,
                        // which the client sees as a failed download, never as a
                        // complete-looking file.
                        let run = run?;
                        match run.await {
                            Ok(Ok(summary)) if summary.truncated => {
                                tracing::warn!(
                                    rows = summary.row_count,
                                    "CSV export cut short by the agent's row or byte cap"
                                );
                                Some((
                                    Err(std::io::Error::other(format!(
                                        "the export stopped at the agent's cap after {} rows \
                                     (raise CUSTARD_MAX_ROWS / CUSTARD_MAX_BYTES on the agent)",
                                        summary.row_count
                                    ))),
                                    (None, rx, None),
                                ))
                            }
                            Ok(Ok(summary)) => {
                                tracing::info!(rows = summary.row_count, "CSV export finished");
                                None
                            }
                            Ok(Err(e)) => Some((
                                Err(std::io::Error::other(format!("export failed: {e}"))),
                                (None, rx, None),
                            )),
                            Err(e) => Some((Err(std::io::Error::other(e)), (None, rx, None))),
                        }
                    }
                }
            }
        },
    );
    let day = chrono::Utc::now().date_naive();
    let filename = crate::download::csv_name(&q.record.question, &connection.name, day);
    Ok(CsvExport { filename, bytes: Box::pin(stream) })
}

/// A JSON value as one CSV cell: its exact text ([`CellText::Exact`]: null
/// empty, text as it is, anything else as JSON) made safe by [`text_cell`],
/// except numbers. In a column of a number type (`numeric` true), text that
/// is a plain number (PostgreSQL sends `numeric` as text to keep its
/// precision) is a number too, so `-2` is `-2`.
fn cell(value: &Value, numeric: bool) -> Cow<'_, str> {
    let text = CellText::Exact.text(value);
    match value {
        Value::Number(_) => text,
        Value::String(s) if numeric && plain_number(s) => text,
        _ => text_cell(text),
    }
}

/// Text as a CSV cell that a spreadsheet shows and does not run (OWASP's CSV
/// injection guidance): a cell starting with `=`, `+`, `-`, `@`, a tab or a
/// carriage return gets a leading `'`.
fn text_cell<'a>(text: impl Into<Cow<'a, str>>) -> Cow<'a, str> {
    let text = text.into();
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}").into()
    } else {
        text
    }
}

/// A plain decimal number: an optional `-`, digits with at most one `.`, and
/// an optional exponent (`-2`, `12.50`, `1e-7`); not `-inf`, not `-2+3`.
fn plain_number(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e.strip_prefix(['+', '-']).unwrap_or(e))),
        None => (unsigned, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    !(whole.is_empty() && fraction.is_empty())
        && digits(whole)
        && digits(fraction)
        && exponent.is_none_or(|e| !e.is_empty() && digits(e))
}

/// CSV bytes of some records (RFC 4180 quoting, CRLF line ends).
fn csv_bytes<R: AsRef<[u8]>>(records: &[Vec<R>]) -> std::io::Result<Vec<u8>> {
    let mut writer = csv_writer();
    for record in records {
        writer.write_record(record)?;
    }
    writer.into_inner().map_err(|e| std::io::Error::other(e.to_string()))
}

fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new())
}

/// A batch of rows as CSV lines, each cell by [`cell`]; `numeric` says which
/// columns have a number type. One record and one number buffer serve the
/// whole batch: an export passes millions of cells here.
fn csv_rows(rows: &[Vec<Value>], numeric: &[bool]) -> std::io::Result<Vec<u8>> {
    let mut writer = csv_writer();
    let mut record = csv::ByteRecord::new();
    let mut number = String::new();
    for row in rows {
        record.clear();
        for (i, value) in row.iter().enumerate() {
            if let Value::Number(n) = value {
                number.clear();
                let _ = std::fmt::Write::write_fmt(&mut number, format_args!("{n}"));
                record.push_field(number.as_bytes());
            } else {
                record.push_field(cell(value, numeric.get(i).copied().unwrap_or(false)).as_bytes());
            }
        }
        writer.write_byte_record(&record)?;
    }
    writer.into_inner().map_err(|e| std::io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_batch_of_rows_is_written_cell_by_cell() {
        let rows = vec![
            vec![json!(1), json!(-2.5), json!("=SUM(A1)"), Value::Null, json!("-3.10")],
            vec![json!(u64::MAX), json!(true), json!("a,b"), json!([1, "x"]), json!("n/a")],
        ];
        let numeric = [true, true, false, false, true];
        let out = String::from_utf8(csv_rows(&rows, &numeric).unwrap()).unwrap();
        let expected = "1,-2.5,'=SUM(A1),,-3.10\r\n\
                        18446744073709551615,true,\"a,b\",\"[1,\"\"x\"\"]\",n/a\r\n";
        assert_eq!(out, expected);
        // The same as each cell by `cell`, written record by record.
        let cells: Vec<Vec<Cow<'_, str>>> = rows
            .iter()
            .map(|row| row.iter().zip(numeric).map(|(v, n)| cell(v, n)).collect())
            .collect();
        assert_eq!(
            out.as_bytes(),
            csv_bytes(
                &cells
                    .iter()
                    .map(|r| r.iter().map(|c| c.as_bytes()).collect())
                    .collect::<Vec<Vec<&[u8]>>>()
            )
            .unwrap()
        );
    }

    #[test]
    fn csv_rows_follow_rfc_4180() {
        let out = csv_bytes(&[vec!["plain", "a,b", "say \"hi\"", "two\nlines", ""]]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",\r\n"
        );
        assert_eq!(cell(&Value::Null, false), "");
        assert_eq!(cell(&json!("12.50"), true), "12.50");
        assert_eq!(cell(&json!(3), false), "3");
        assert_eq!(cell(&json!([1, 2]), false), "[1,2]");
    }

    /// OWASP's CSV injection guidance: text a spreadsheet would run as a
    /// formula is prefixed with `'`; numbers stay numbers.
    #[test]
    fn csv_cells_never_start_a_formula_but_numbers_stay_numbers() {
        // A `numeric` beyond any float, written exactly.
        const BIG: &str = "-123456789012345678901234567890.123456789";
        // (value, the column's type, the cell)
        let cases: &[(Value, &str, &str)] = &[
            (
                json!("=HYPERLINK(\"http://evil.example\",\"x\")"),
                "text",
                "'=HYPERLINK(\"http://evil.example\",\"x\")",
            ),
            (json!("+cmd|' /C calc'!A0"), "text", "'+cmd|' /C calc'!A0"),
            (json!("@SUM(1+1)*cmd|' /C calc'!A0"), "text", "'@SUM(1+1)*cmd|' /C calc'!A0"),
            (json!("-2+3"), "text", "'-2+3"),
            (json!("\t=1+1"), "text", "'\t=1+1"),
            (json!("\r=1+1"), "text", "'\r=1+1"),
            (json!("-2"), "text", "'-2"),
            (json!("-2+3"), "numeric", "'-2+3"),
            (json!("-inf"), "float8", "'-inf"),
            (json!("=1"), "int4", "'=1"),
            (json!(-2), "int4", "-2"),
            (json!(-2), "text", "-2"),
            (json!(-2.5), "float8", "-2.5"),
            (json!("-2"), "numeric", "-2"),
            (json!("-12.50"), "numeric(10,2)", "-12.50"),
            (json!("-1e-7"), "double precision", "-1e-7"),
            (json!("-2"), "INTEGER", "-2"),
            // The number types are the table's (`format::is_numeric_type`):
            // `money` was written `'-12.34` before, unlike every other number.
            (json!("-12.34"), "money", "-12.34"),
            (json!("-3"), "TINYINT", "-3"),
            (json!("-3"), "mediumint", "-3"),
            (json!(BIG), "numeric", BIG),
            (json!("2026-03-01T00:00:00Z"), "timestamptz", "2026-03-01T00:00:00Z"),
            (json!(false), "bool", "false"),
            (json!("plain"), "text", "plain"),
            (json!("a=b"), "text", "a=b"),
            (json!(" =1"), "text", " =1"),
            (json!(""), "text", ""),
            (json!(true), "bool", "true"),
            (json!(null), "text", ""),
            (json!(["=1"]), "jsonb", "[\"=1\"]"),
            (json!({"a": "=1"}), "jsonb", "{\"a\":\"=1\"}"),
        ];
        for (value, type_name, expected) in cases {
            assert_eq!(
                cell(value, is_numeric_type(type_name)),
                *expected,
                "{value} as {type_name}"
            );
        }
        // Column names are text too.
        assert_eq!(text_cell("=cmd"), "'=cmd");
        assert_eq!(text_cell("total"), "total");
        let numbers = [("-2", true), ("12.50", true), (".5", true), ("5.", true), ("1E+3", true)];
        let not_numbers = [("", false), ("-", false), (".", false), ("1e", false), ("--2", false)];
        for (text, expected) in numbers.into_iter().chain(not_numbers) {
            assert_eq!(plain_number(text), expected, "{text:?}");
        }
    }
}
