//! Conversions between executor results and their wire messages (with an executor feature).

use std::time::Duration;

use super::{Done, ErrorReport, WireColumnMeta};
use crate::{ColumnMeta, ExecError, RunSummary};

impl From<&ColumnMeta> for WireColumnMeta {
    fn from(column: &ColumnMeta) -> Self {
        WireColumnMeta { name: column.name.clone(), type_name: column.type_name.clone() }
    }
}

impl From<WireColumnMeta> for ColumnMeta {
    fn from(column: WireColumnMeta) -> Self {
        ColumnMeta { name: column.name, type_name: column.type_name }
    }
}

impl From<&RunSummary> for Done {
    fn from(summary: &RunSummary) -> Self {
        Done {
            row_count: summary.row_count,
            truncated: summary.truncated,
            elapsed_ms: u64::try_from(summary.elapsed.as_millis()).unwrap_or(u64::MAX),
            bytes: summary.bytes,
        }
    }
}

impl From<&Done> for RunSummary {
    fn from(done: &Done) -> Self {
        RunSummary {
            row_count: done.row_count,
            truncated: done.truncated,
            bytes: done.bytes,
            elapsed: Duration::from_millis(done.elapsed_ms),
        }
    }
}

impl From<&ExecError> for ErrorReport {
    fn from(err: &ExecError) -> Self {
        ErrorReport {
            code: err.code.as_str().to_owned(),
            message: err.message.clone(),
            sqlstate: err.sqlstate.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExecErrorCode;

    #[test]
    fn exec_values_convert() {
        let column = ColumnMeta { name: "n".into(), type_name: "int8".into() };
        assert_eq!(ColumnMeta::from(WireColumnMeta::from(&column)), column);

        let summary = RunSummary {
            row_count: 3,
            truncated: true,
            bytes: 99,
            elapsed: Duration::from_millis(1500),
        };
        let done = Done::from(&summary);
        assert_eq!(done.elapsed_ms, 1500);
        assert_eq!(RunSummary::from(&done), summary);

        let err = ExecError {
            sqlstate: Some("57014".into()),
            ..ExecError::new(ExecErrorCode::Timeout, "query ran past 30000 ms")
        };
        let report = ErrorReport::from(&err);
        assert_eq!(report.code, "query_timeout");
        assert_eq!(report.sqlstate.as_deref(), Some("57014"));
    }
}
