//! Conversions between executor results and their wire messages (with an executor feature).

use std::time::Duration;

use super::{Done, ErrorReport, ReportCode, WireColumnMeta};
use crate::{Code, ColumnMeta, ExecError, ExecErrorCode, RunSummary};

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
            code: err.code.into(),
            message: err.message.clone(),
            sqlstate: err.sqlstate.clone(),
        }
    }
}

impl From<ErrorReport> for ExecError {
    /// An agent's `error` reply as an executor error: executor codes keep their
    /// meaning (older names too: `busy` is [`ExecErrorCode::AgentBusy`]), the
    /// agent's guard refusals become [`ExecErrorCode::Rejected`] (with the
    /// guard's code in the message), and anything else is
    /// [`ExecErrorCode::Internal`] (with the code in the message).
    fn from(report: ErrorReport) -> Self {
        let code = match &report.code {
            ReportCode::Known(Code::Exec(code)) => *code,
            ReportCode::Known(Code::Guard(_)) => ExecErrorCode::Rejected,
            _ => ExecErrorCode::Internal,
        };
        let message = match code {
            ExecErrorCode::Rejected => {
                format!("the agent's guard refused the query ({}): {}", report.code, report.message)
            }
            ExecErrorCode::Internal if report.code != Code::Exec(ExecErrorCode::Internal) => {
                format!("{}: {}", report.code, report.message)
            }
            _ => report.message,
        };
        ExecError { code, message, sqlstate: report.sqlstate }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(ExecError::from(report), err);
    }

    #[test]
    fn agent_error_reports_map_to_exec_codes() {
        let code = |c: &str| ExecError::from(ErrorReport::new(c, "m")).code;
        // Every executor code keeps its meaning.
        for &exec in ExecErrorCode::ALL {
            assert_eq!(code(exec.as_str()), exec, "{exec}");
        }
        // Older agents' names.
        assert_eq!(code("busy"), ExecErrorCode::AgentBusy);
        assert_eq!(code("rejected"), ExecErrorCode::Rejected);
        assert_eq!(code("agent_busy"), ExecErrorCode::AgentBusy);
        assert_eq!(code("not_a_query"), ExecErrorCode::Rejected);
        assert_eq!(code("unknown_table"), ExecErrorCode::Rejected);
        assert_eq!(code("canceled"), ExecErrorCode::Canceled);
        assert_eq!(code("database_unavailable"), ExecErrorCode::DatabaseUnavailable);
        assert_eq!(code("malformed_frame"), ExecErrorCode::Internal);
        assert_eq!(code("from_the_future"), ExecErrorCode::Internal);
        // Unified on purpose: the agent's role refusal keeps its own code (it
        // was `database_unavailable` once it reached the server).
        assert_eq!(code("privileged_role"), ExecErrorCode::PrivilegedRole);
        let rejected = ExecError::from(ErrorReport::new("table_not_allowed", "no"));
        assert!(rejected.message.contains("table_not_allowed"), "{}", rejected.message);
        let unknown = ExecError::from(ErrorReport::new("from_the_future", "m"));
        assert_eq!(unknown.message, "from_the_future: m");
        let internal = ExecError::from(ErrorReport::new(ExecErrorCode::Internal, "m"));
        assert_eq!(internal.message, "m");
    }
}
